"""Events a generation publishes on the channel layer, one group per request.

A worker sends them; any consumer or SSE view subscribed to the group relays them:
    {"type": "gen.token", "text": str, "request_id"}                  coalesced text delta
    {"type": "gen.done", "message_id", "status", "error", "request_id"} exactly once, at the end

Publishing from worker threads goes through one event loop per process that lives as long as
the process: async_to_sync would start a loop (and so a new Redis connection pool) per call.
"""

import asyncio
import threading

from channels.layers import get_channel_layer

_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


def generation_group(request_id: str) -> str:
    return f"gen.{request_id}"


def _publisher_loop() -> asyncio.AbstractEventLoop:
    global _loop
    if _loop is None:
        with _loop_lock:
            if _loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="channel-publisher", daemon=True).start()
                _loop = loop
    return _loop


def publish(request_id: str, event: dict, timeout: float = 10.0) -> None:
    # Consumers may follow several generations; the request id tells them which one this is.
    message = {**event, "request_id": request_id}
    layer = get_channel_layer()
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is not None:
        raise RuntimeError("publish() is for sync code; await the channel layer directly in async code")
    future = asyncio.run_coroutine_threadsafe(
        layer.group_send(generation_group(request_id), message), _publisher_loop()
    )
    future.result(timeout)
