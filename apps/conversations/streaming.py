"""Events a generation publishes on the channel layer, one group per answer.

The group is named by the answer's stream key (its message id, issued by the server), never by
anything a client chose. A worker sends the events; any consumer or SSE view subscribed to the
group relays them:
    {"type": "gen.token", "text": str, "stream_key"}                   coalesced text delta
    {"type": "gen.trace", "entries": [{...}], "stream_key"}             workflow steps that finished
    {"type": "gen.done", "message_id", "status", "error", "stream_key"} exactly once, at the end

Publishing from worker threads goes through one event loop per process that lives as long as
the process: async_to_sync would start a loop (and so a new Redis connection pool) per call.
"""

import asyncio
import logging
import threading

from channels.layers import get_channel_layer

logger = logging.getLogger(__name__)
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


_tails: dict[str, asyncio.Task] = {}  # each stream's last send; read and written in the loop thread only


async def _send_in_order(stream_key: str, message: dict) -> None:
    """Sends after the stream's previous event has gone out, so a stream's events arrive in
    the order they were published even when nobody waits for them."""
    current = asyncio.current_task()
    previous = _tails.get(stream_key)
    _tails[stream_key] = current
    try:
        if previous is not None and not previous.done():
            await asyncio.wait([previous])
        await get_channel_layer().group_send(generation_group(stream_key), message)
    finally:
        if _tails.get(stream_key) is current:
            del _tails[stream_key]


def _log_failure(future) -> None:
    if not future.cancelled() and future.exception() is not None:
        logger.warning("An event of a stream could not be sent: %r", future.exception())


def publish(stream_key: str, event: dict, timeout: float = 10.0, *, wait: bool = True):
    """Sends one event to the stream's group. wait=False (tokens, trace entries) returns the
    send's future at once: the answer's thread goes on while the event travels, and waiting for
    a later event (the end) still means every earlier one was sent first."""
    # Consumers may follow several generations; the stream key tells them which one this is.
    message = {**event, "stream_key": stream_key}
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is not None:
        raise RuntimeError("publish() is for sync code; await the channel layer directly in async code")
    future = asyncio.run_coroutine_threadsafe(_send_in_order(stream_key, message), _publisher_loop())
    if wait:
        future.result(timeout)
        return future
    future.add_done_callback(_log_failure)
    return future


class HeldTraces:
    """An answer's trace entries, held until its first token has gone and then sent as one event.

    Sent one by one, the entries of the steps before the model's (six in the seeded workflow)
    each cost the worker a channel-layer send while the next step waited for the interpreter,
    and the web server one relay each, which a fast engine's first token would queue behind
    (bench/README.md, 2026-12-07). Held entries go out together once the first token has been
    sent, when the run ends, or `hold_s` after the first one was held (a slow step still shows
    while it runs); entries after that go out at once, in the order they were added."""

    def __init__(self, stream_key: str, hold_s: float = 0.25):
        self.stream_key = stream_key
        self.hold_s = hold_s
        self.held: list[dict] = []
        self.released = False
        self.lock = threading.Lock()
        self.timer: threading.Timer | None = None

    def add(self, entry: dict) -> None:
        with self.lock:
            if self.released:
                publish(self.stream_key, {"type": "gen.trace", "entries": [entry]}, wait=False)
                return
            self.held.append(entry)
            if self.timer is None:
                self.timer = threading.Timer(self.hold_s, self.release)
                self.timer.daemon = True
                self.timer.start()

    def release(self) -> None:
        with self.lock:
            if self.released:
                return
            self.released = True
            if self.timer is not None:
                self.timer.cancel()
            if self.held:
                publish(self.stream_key, {"type": "gen.trace", "entries": self.held}, wait=False)
            self.held = []
