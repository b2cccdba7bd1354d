"""Engine calls shared by the chat tools: sampling parameters from data, cancellation, streaming.

Runs on inference workers only (the engine lives in their process).
"""

import logging
import time

from django.conf import settings

from apps.conversations import state
from apps.conversations.streaming import publish

logger = logging.getLogger(__name__)

SAMPLING_FIELDS = ("greedy", "temperature", "top_p", "top_k", "repetition_penalty", "max_tokens", "seed", "stop")


def sampling_params(*layers):
    """SamplingParams from layered dicts (workflow defaults, then the node, then the request);
    a later layer's non-null value wins. The operator's CHAT_MAX_TOKENS caps every answer."""
    from workers.llm import SamplingParams

    values = {"temperature": 0.0, "greedy": True, "max_tokens": 256}
    for layer in layers:
        values.update({k: v for k, v in (layer or {}).items() if k in SAMPLING_FIELDS and v is not None})
    values["max_tokens"] = max(1, min(int(values["max_tokens"]), settings.CHAT_MAX_TOKENS, settings.ENGINE_MAX_SEQ_LEN))
    values["stop"] = tuple(values.get("stop") or ())
    return SamplingParams(**values)


def cancel_poller(stream_key: str | None, local_cancel=None, deadline: float | None = None, interval: float = 0.05):
    """A should_cancel callback for the engine: the user's Stop (a Redis flag, asked at most every
    `interval` seconds), a local event (a step that timed out), or the run's deadline."""
    last = {"at": 0.0, "value": False}

    def should_cancel() -> bool:
        now = time.monotonic()
        if local_cancel is not None and local_cancel.is_set():
            return True
        if deadline is not None and now > deadline:
            return True
        if stream_key and not last["value"] and now - last["at"] >= interval:
            last["at"] = now
            last["value"] = state.cancel_requested(stream_key)
        return last["value"]

    return should_cancel


class FirstTokenRelay:
    """The engine's `on_token` callback that sends an answer's first text from the engine's own
    thread and holds the engine until the send is done (at most `hold_s`) before it decodes on.

    Handed to another thread, a first token waited for the CPU: on a 2-core machine the engine's
    next decode steps take both cores, and the send took 5.5 ms (median) instead of about one
    (bench/README.md, 2026-12-07). The hold delays the engine's other rows as long, once per
    answer, right after the prefill that delayed them far more. A send still under way when the
    hold ends goes on; one that fails is logged, as every token's is."""

    def __init__(self, stream_key: str | None, hold_s: float = 0.02):
        self.stream_key = stream_key
        self.hold_s = hold_s
        self.sent = None  # the event whose text this relay sent

    def __call__(self, event) -> None:
        if self.sent is not None or not event.text or not self.stream_key:
            return
        try:
            future = publish(self.stream_key, {"type": "gen.token", "text": event.text}, wait=False)
        except Exception:  # stream_handle sends the text instead
            logger.exception("Sending the first token of %s failed", self.stream_key)
            return
        self.sent = event
        try:
            future.result(self.hold_s)
        except Exception:  # still under way, or failed (the send's own callback logs that)
            pass


def stream_handle(handle, stream_key: str | None, on_progress=None, on_first=None, on_token=None, relay=None) -> str:
    """Relay a generation's tokens to its group in chunks of ~COALESCE seconds; return the text.
    The first token goes out at once (from the engine's thread, when `relay`, a FirstTokenRelay
    given to the engine, sent it): the chunking clock starts with it, not at submit."""
    text, pending, started = "", "", False
    last_flush, last_progress = float("-inf"), time.monotonic()
    for event in handle:
        if not started and on_first is not None:
            on_first()
        started = True
        if on_token is not None:
            on_token()
        text += event.text
        now = time.monotonic()
        if relay is not None and event is relay.sent:
            last_flush = now
        else:
            pending += event.text
        if stream_key and pending and now - last_flush >= settings.STREAM_COALESCE_SECONDS:
            publish(stream_key, {"type": "gen.token", "text": pending}, wait=False)
            pending, last_flush = "", now
        if on_progress and now - last_progress >= 1.0:
            on_progress(text)
            last_progress = now
    if stream_key and pending:
        publish(stream_key, {"type": "gen.token", "text": pending}, wait=False)
    return text


def result_fields(result, *, prompt_build_s: float | None = None, summarised_through=None) -> dict:
    """What a receipt records of one engine generation."""
    return {
        "content": result.text,
        "finish_reason": result.finish_reason,
        "error": result.error or "",
        "model": result.model_id,
        "adapters": [{"name": name, "version": str(v)} for name, v in result.adapters.items()],
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "time_to_first_token_ms": round(result.time_to_first_token * 1000, 1)
        if result.time_to_first_token is not None
        else None,
        "total_time_ms": round(result.total_time * 1000, 1),
        "mean_logprob": result.mean_logprob,
        "summarised_through": summarised_through,
        "prompt_build_ms": round(prompt_build_s * 1000, 1) if prompt_build_s is not None else None,
    }
