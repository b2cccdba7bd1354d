"""Events a generation publishes on the channel layer, one group per answer.

The group is named by the answer's stream key (its message id, issued by the server), never by
anything a client chose. A worker sends the events; any consumer or SSE view subscribed to the
group relays them:
    {"type": "gen.token", "text": str, "stream_key"}                   coalesced text delta
    {"type": "gen.trace", "entry": {...}, "stream_key"}                 a workflow step finished
    {"type": "gen.done", "message_id", "status", "error", "stream_key"} exactly once, at the end

Publishing from worker threads goes through one event loop per process that lives as long as
the process: async_to_sync would start a loop (and so a new Redis connection pool) per call.
"""

import asyncio
import threading

from channels.layers import get_channel_layer

_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


def generation_group(stream_key: str) -> str:
    return f"gen.{stream_key}"


def _publisher_loop() -> asyncio.AbstractEventLoop:
    global _loop
    if _loop is None:
        with _loop_lock:
            if _loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="channel-publisher", daemon=True).start()
                _loop = loop
    return _loop


def publish(stream_key: str, event: dict, timeout: float = 10.0) -> None:
    # Consumers may follow several generations; the stream key tells them which one this is.
    message = {**event, "stream_key": stream_key}
    layer = get_channel_layer()
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is not None:
        raise RuntimeError("publish() is for sync code; await the channel layer directly in async code")
    future = asyncio.run_coroutine_threadsafe(
        layer.group_send(generation_group(stream_key), message), _publisher_loop()
    )
    future.result(timeout)
