"""Per-user event stream over WebSockets (ingestion progress, titles, job updates)."""

import json

from asgiref.sync import async_to_sync
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.layers import get_channel_layer

CLOSE_UNAUTHENTICATED = 4401


def user_events_group(user_id) -> str:
    return f"user-events.{user_id}"


def user_event_send(*, user_id, event: str, data: dict) -> None:
    """Deliver an event to every open tab of one user, from any process (web or worker)."""
    async_to_sync(get_channel_layer().group_send)(
        user_events_group(user_id), {"type": "user.event", "event": event, "data": data}
    )


class UserEventsConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self):
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        self.group = user_events_group(user.id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code):
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive(self, text_data=None, bytes_data=None, **kwargs):
        try:
            content = json.loads(text_data or bytes_data or b"")
        except ValueError:
            await self.send_error("Frames must be JSON objects.")
            return
        if isinstance(content, dict) and content.get("type") == "ping":
            await self.send_json({"type": "pong"})
        else:
            await self.send_error("Unknown frame type.")

    async def send_error(self, message: str):
        await self.send_json({"type": "error", "error": {"code": "validation_error", "message": message}})

    async def user_event(self, message):
        await self.send_json({"type": "event", "event": message["event"], "data": message["data"]})
