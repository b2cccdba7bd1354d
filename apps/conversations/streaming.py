"""Events a generation publishes on the channel layer, one group per request.

A worker sends them; any consumer or SSE view subscribed to the group relays them:
    {"type": "gen.token", "text": str}                          coalesced text delta
    {"type": "gen.done", "message_id", "status", "error"}        exactly once, at the end
"""

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer


def generation_group(request_id: str) -> str:
    return f"gen.{request_id}"


def publish(request_id: str, event: dict) -> None:
    # Consumers may follow several generations; the request id tells them which one this is.
    async_to_sync(get_channel_layer().group_send)(generation_group(request_id), {**event, "request_id": request_id})
