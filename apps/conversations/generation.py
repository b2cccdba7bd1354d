"""Runs one answer on this worker's engine and streams it to the request's channel group."""

import dataclasses
import logging
import threading
import time

from django.conf import settings
from django.utils import timezone

from apps.conversations import services, state
from apps.conversations.engine_runtime import get_engine
from apps.conversations.grounding import ground
from apps.conversations.models import Message
from apps.conversations.prompting import build_reply_prompt
from apps.conversations.streaming import publish

logger = logging.getLogger(__name__)

STATUS_BY_FINISH = {
    "stop": Message.Status.COMPLETE,
    "length": Message.Status.COMPLETE,
    "cancelled": Message.Status.CANCELLED,
    "error": Message.Status.FAILED,
}


class _Heartbeat(threading.Thread):
    """Proves this worker is alive while the answer waits for a slot, prefills or decodes."""

    def __init__(self, message_id):
        super().__init__(daemon=True)
        self.message_id = message_id
        self.stopped = threading.Event()

    def run(self):
        while not self.stopped.wait(settings.GENERATION_HEARTBEAT_SECONDS / 3):
            state.heartbeat(self.message_id)


def cancel_poller(request_id: str, interval: float = 0.05):
    """A should_cancel callback for the engine that asks Redis at most every `interval` seconds."""
    last = {"at": 0.0, "value": False}

    def should_cancel() -> bool:
        now = time.monotonic()
        if not last["value"] and now - last["at"] >= interval:
            last["at"] = now
            last["value"] = state.cancel_requested(request_id)
        return last["value"]

    return should_cancel


def sampling_params(**overrides):
    from workers.llm import SamplingParams

    values = {
        "temperature": settings.CHAT_TEMPERATURE,
        "top_p": settings.CHAT_TOP_P,
        "repetition_penalty": settings.CHAT_REPETITION_PENALTY,
        "max_tokens": settings.CHAT_MAX_TOKENS,
    }
    values.update({k: v for k, v in overrides.items() if v is not None})
    return SamplingParams(**values)


def stream_handle(handle, request_id: str, on_progress=None) -> str:
    """Relay a generation's tokens to its group in chunks of ~COALESCE seconds; return the text."""
    text, pending = "", ""
    last_flush = last_progress = time.monotonic()
    for event in handle:
        text += event.text
        pending += event.text
        now = time.monotonic()
        if pending and now - last_flush >= settings.STREAM_COALESCE_SECONDS:
            publish(request_id, {"type": "gen.token", "text": pending})
            pending, last_flush = "", now
        if on_progress and now - last_progress >= 1.0:
            on_progress(text)
            last_progress = now
    if pending:
        publish(request_id, {"type": "gen.token", "text": pending})
    return text


def run_reply(message_id) -> str:
    message = Message.objects.select_related("conversation").filter(pk=message_id).first()
    if message is None or message.status != Message.Status.QUEUED:
        return "skipped"
    if state.cancel_requested(message.request_id):
        services.generation_finish(
            message=message, content="", status=Message.Status.CANCELLED, receipt={"finish_reason": "cancelled"}
        )
        return "cancelled"
    if not services.generation_started(message=message):
        return "skipped"

    picked_up = timezone.now()
    heartbeat = _Heartbeat(message.pk)
    heartbeat.start()
    try:
        grounding = ground(conversation=message.conversation, query=message.parent.content)
        if grounding is not None and not grounding.found:
            return _answer_without_knowledge(message, grounding, picked_up)
        engine = get_engine()
        params = sampling_params()
        build_started = time.perf_counter()
        prompt = build_reply_prompt(
            engine,
            assistant=message,
            max_tokens=params.max_tokens,
            grounding_text=grounding.system_text() if grounding else "",
        )
        prompt_build = time.perf_counter() - build_started
        handle = engine.submit(
            prompt.text, params=params, should_cancel=cancel_poller(message.request_id), truncate=True
        )
        stream_handle(
            handle,
            message.request_id,
            on_progress=lambda text: services.generation_progress(message=message, content=text),
        )
        result = handle.result()
        receipt = {
            "model": result.model_id,
            "adapters": [{"name": name, "version": str(v)} for name, v in result.adapters.items()],
            "routing_trace": [],
            "workflow_trace": [],
            "prompt_tokens": result.prompt_tokens,
            "completion_tokens": result.completion_tokens,
            "time_to_first_token_ms": round(result.time_to_first_token * 1000, 1)
            if result.time_to_first_token is not None
            else None,
            "total_time_ms": round(result.total_time * 1000, 1),
            "mean_logprob": result.mean_logprob,
            "finish_reason": result.finish_reason,
            "summarised_through": prompt.summarised_through,
            "queue_wait_ms": round((picked_up - message.created_at).total_seconds() * 1000, 1),
            "prompt_build_ms": round(prompt_build * 1000, 1),
        }
        if grounding is not None:
            receipt["retrieval"] = grounding.receipt()
        services.generation_finish(
            message=message,
            content=result.text,
            status=STATUS_BY_FINISH[result.finish_reason],
            receipt=receipt,
            error=result.error or "",
        )
        return result.finish_reason
    except Exception as exc:
        logger.exception("Generation of %s failed", message.pk)
        services.generation_finish(
            message=message,
            content=Message.objects.get(pk=message.pk).content,
            status=Message.Status.FAILED,
            receipt={"finish_reason": "error"},
            error=f"The model could not answer: {exc.__class__.__name__}. Please retry.",
        )
        return "error"
    finally:
        heartbeat.stopped.set()


def _answer_without_knowledge(message: Message, grounding, picked_up) -> str:
    """Nothing relevant in the bound documents: say so plainly instead of letting the model guess."""
    text = grounding.not_found_answer()
    publish(message.request_id, {"type": "gen.token", "text": text})
    services.generation_finish(
        message=message,
        content=text,
        status=Message.Status.COMPLETE,
        receipt={
            "model": None,
            "adapters": [],
            "routing_trace": [],
            "workflow_trace": [],
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "finish_reason": "no_knowledge",
            "queue_wait_ms": round((picked_up - message.created_at).total_seconds() * 1000, 1),
            "retrieval": grounding.receipt(),
        },
    )
    return "no_knowledge"


TITLE_MAX_WORDS = 8


def clean_title(text: str) -> str:
    """A sidebar title from the model's reply: first line, no quotes or label, at most 8 words."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    line = line.strip().strip("\"'*#`").strip()
    if line.lower().startswith("title:"):
        line = line[6:].strip().strip("\"'")
    words = line.split()
    title = " ".join(words[:TITLE_MAX_WORDS])
    return title.rstrip(".,;:!") if len(words) > TITLE_MAX_WORDS or title.endswith((".", ",", ";", ":")) else title


def run_title(conversation) -> str | None:
    from workers.llm import SamplingParams

    path = [m for m in conversation.messages.order_by("created_at")[:2] if m.content.strip()]
    if len(path) < 2:
        return None
    engine = get_engine()

    def one_line(text: str) -> str:
        return " ".join(text.split())[:600]

    prompt = settings.CHAT_TITLE_PROMPT.format(question=one_line(path[0].content), answer=one_line(path[1].content))
    result = engine.generate(prompt, SamplingParams(greedy=True, max_tokens=16, stop=["\n"]), truncate=True)
    return clean_title(result.text) or None


def run_completion(request_id: str, user_id, messages: list[dict], params: dict) -> str:
    """A stateless OpenAI-style completion: nothing is stored, events go to the request's group."""
    from workers.llm import ContextOverflowError

    done = {"type": "gen.done", "message_id": None, "status": "complete", "error": ""}
    try:
        if state.cancel_requested(request_id):
            done.update(status="cancelled", finish_reason="cancelled", text="", usage={})
            return "cancelled"
        engine = get_engine()
        prompt = engine.render_chat(messages, add_generation_prompt=True)
        sampling = sampling_params(
            temperature=params.get("temperature"),
            top_p=params.get("top_p"),
            max_tokens=params.get("max_tokens"),
            repetition_penalty=1.0,
        )
        sampling = dataclasses.replace(sampling, stop=tuple(params.get("stop") or ()), seed=params.get("seed"))
        handle = engine.submit(prompt, params=sampling, should_cancel=cancel_poller(request_id))
        stream_handle(handle, request_id)
        result = handle.result()
        done.update(
            status=STATUS_BY_FINISH[result.finish_reason],
            finish_reason=result.finish_reason,
            text=result.text,
            error=result.error or "",
            usage={
                "prompt_tokens": result.prompt_tokens,
                "completion_tokens": result.completion_tokens,
                "total_tokens": result.prompt_tokens + result.completion_tokens,
            },
        )
        return result.finish_reason
    except ContextOverflowError as exc:
        done.update(status="failed", error=str(exc))
        return "error"
    except Exception as exc:
        logger.exception("Completion %s failed", request_id)
        done.update(status="failed", error=f"The model could not answer: {exc.__class__.__name__}.")
        return "error"
    finally:
        state.generation_slot_release(user_id=user_id, request_id=request_id)
        publish(request_id, done)
