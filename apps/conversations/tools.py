"""The chat tools' handlers. A `tool.spec` artifact names one of these by its handler name; a
workflow node calls the tool by the spec's name. Handlers run on inference workers.

A handler gets a ToolCall and returns a dict of outputs. An output with `content` is an answer
to the user; the workflow's last such output is the reply.
"""

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from apps.artifacts.registry import register_handler
from apps.conversations.engine_runtime import get_engine
from apps.conversations.grounding import ground
from apps.conversations.inference import (
    FirstTokenRelay,
    cancel_poller,
    result_fields,
    sampling_params,
    stream_handle,
)
from apps.conversations.prompting import build_reply_prompt
from apps.conversations.streaming import publish
from liminal.errors import Invalid, Unavailable


@dataclass
class RunContext:
    """What every step of one workflow run shares: who asks, about what, and how to stream."""

    actor: object
    defaults: dict
    conversation: object = None
    message: object = None  # the assistant message being answered, in a chat turn
    overrides: dict = field(default_factory=dict)  # sampling the request asked for
    stream_key: str | None = None  # the channel group streamed tokens go to
    context_ids: list = field(default_factory=list)  # outside a chat: the actor's contexts to ground in
    adapters: list = field(default_factory=list)  # [{name, version, fs_dir, weight}] the answer runs on
    routing: object = None  # a Future of the router's decision, made while the first steps run
    deadline: float | None = None
    now: object = None  # the time recall is relative to (None: now); tests move it
    on_progress: object = None
    traces: object = None  # a HeldTraces: the steps' trace entries, sent once the answer streams
    streamed: bool = False
    _embeddings: dict = field(default_factory=dict)
    _embedding_lock: threading.Lock = field(default_factory=threading.Lock)

    def answer_adapters(self) -> list:
        """The adapters the answer runs on: the router's choice, waited for here if it is still
        being made."""
        if self.routing is not None:
            try:
                self.adapters = self.routing.result()["adapters"]
            except Exception as exc:
                raise Unavailable(f"The router could not choose adapters: {exc.__class__.__name__}.") from exc
        return self.adapters

    def mark_streamed(self) -> None:
        self.streamed = True
        if self.traces is not None:
            self.traces.release()

    def embedding(self, text: str) -> list[float]:
        """The MiniLM embedding of `text`, computed once per run: the recall steps and the
        classifier all need the message's, and each encode costs ~15 ms on CPU."""
        with self._embedding_lock:
            if text not in self._embeddings:
                from apps.training.services import embed

                self._embeddings[text] = embed(text)
            return self._embeddings[text]


@dataclass
class ToolCall:
    inputs: dict
    config: dict
    run: RunContext
    cancelled: threading.Event = field(default_factory=threading.Event)
    # When the handler last showed it is working (a streamed token): a step's timeout counts
    # the time without progress, so an answer still streaming under load is not cut short.
    progressed_at: float = field(default_factory=time.monotonic)

    def mark_progress(self) -> None:
        self.progressed_at = time.monotonic()

    def should_cancel(self):
        return cancel_poller(self.run.stream_key, self.cancelled, self.run.deadline)


def _question(call: ToolCall) -> str:
    message = call.inputs.get("message")
    if not isinstance(message, str) or not message.strip():
        raise Invalid("The tool needs a non-empty message.", field="inputs.message")
    return message


def _system_prompt(call: ToolCall) -> str:
    """The system text: the workflow's (or a client's own system message, from the OpenAI-
    compatible API), then any `notes` the workflow passes in (recalled corrections, memory)."""
    conversation = call.run.conversation
    if conversation is not None and conversation.system_prompt:
        system = conversation.system_prompt
    else:
        system = call.inputs.get("system_prompt", call.run.defaults.get("system_prompt", ""))
    notes = call.inputs.get("notes") or []
    notes = [notes] if isinstance(notes, str) else notes
    return "\n\n".join(part for part in (system, *notes) if isinstance(part, str) and part.strip())


def _generate(call: ToolCall, *, grounding_text: str = "") -> dict:
    engine = get_engine()
    run = call.run
    params = sampling_params(run.defaults.get("sampling"), call.inputs.get("sampling"), run.overrides)
    started = time.perf_counter()
    summarised_through = None
    if run.message is not None:
        prompt = build_reply_prompt(
            engine,
            assistant=run.message,
            max_tokens=params.max_tokens,
            system_prompt=_system_prompt(call),
            summary_prompt=run.defaults.get("summary_prompt", "Summarise the conversation."),
            grounding_text=grounding_text,
        )
        text, summarised_through = prompt.text, prompt.summarised_through
    else:
        system = "\n\n".join(part for part in (_system_prompt(call), grounding_text) if part)
        head = [{"role": "system", "content": system}] if system else []
        text = engine.render_chat([*head, {"role": "user", "content": _question(call)}], add_generation_prompt=True)
    build_s = time.perf_counter() - started
    # Hot swap: a newly promoted version is loaded into a free slot on first use; requests already
    # running keep the version they started with.
    adapters = run.answer_adapters()
    for adapter in adapters:
        engine.ensure_adapter(adapter["name"], adapter["fs_dir"], version=adapter["version"])
    relay = FirstTokenRelay(run.stream_key)
    handle = engine.submit(
        text,
        params=params,
        adapters=[(adapter["name"], adapter["weight"]) for adapter in adapters],
        on_token=relay,
        should_cancel=call.should_cancel(),
        truncate=True,
    )
    stream_handle(
        handle,
        run.stream_key,
        on_progress=run.on_progress,
        on_first=run.mark_streamed,
        on_token=call.mark_progress,
        relay=relay,
    )
    result = handle.result()
    if result.finish_reason == "error":
        raise RuntimeError(result.error or "The engine failed.")
    return result_fields(result, prompt_build_s=build_s, summarised_through=summarised_through)


def generic_chat(call: ToolCall) -> dict:
    """A plain answer from the model, to the conversation so far."""
    return _generate(call)


def rag_answer(call: ToolCall) -> dict:
    """An answer grounded in the conversation's bound contexts, citing numbered passages; when
    nothing relevant is found, says so without asking the model (and records a knowledge gap)."""
    run = call.run
    question = _question(call)
    k = int(call.inputs.get("k") or run.defaults.get("retrieval_k") or 4)
    if run.conversation is not None:
        grounding = ground(conversation=run.conversation, query=question, k=k)
    else:
        grounding = ground(actor=run.actor, context_ids=run.context_ids, query=question, k=k)
    if grounding is None:
        return {**_generate(call), "grounded": False}
    if not grounding.found:
        text = grounding.not_found_answer(
            run.defaults.get("no_knowledge_answer", "I could not find this in {contexts}.")
        )
        if run.stream_key:
            publish(run.stream_key, {"type": "gen.token", "text": text}, wait=False)
            run.mark_streamed()
        return {
            "content": text,
            "finish_reason": "no_knowledge",
            "model": None,
            "adapters": [],
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "retrieval": grounding.receipt(),
            "grounded": True,
        }
    template = call.inputs.get("grounded_prompt") or run.defaults.get("grounded_prompt") or "{passages}"
    outputs = _generate(call, grounding_text=grounding.system_text(template))
    return {**outputs, "retrieval": grounding.receipt(), "grounded": True}


_example_vectors: dict[str, tuple[list[str], list[np.ndarray]]] = {}
_example_lock = threading.Lock()


def _unit(rows) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float32)
    return rows / np.maximum(np.linalg.norm(rows, axis=-1, keepdims=True), 1e-12)


def _labelled_vectors(examples: dict) -> tuple[list[str], list[np.ndarray]]:
    """Unit MiniLM embeddings of each label's examples, cached per distinct example set."""
    from apps.knowledge.embedding import current_encoder

    key = hashlib.sha256(json.dumps(examples, sort_keys=True).encode()).hexdigest()
    with _example_lock:
        if key not in _example_vectors:
            labels = sorted(examples)
            encoder = current_encoder()
            _example_vectors[key] = (labels, [_unit(encoder.encode(list(examples[label]))) for label in labels])
        return _example_vectors[key]


def intent_classifier(call: ToolCall) -> dict:
    """The intent of a message from labelled examples (the tool's config, so data): each label
    scores the mean cosine similarity of its `k` nearest examples to the message in MiniLM space
    (default 3), and the best label wins. `confidence` is its margin over the runner-up."""

    examples = call.config.get("examples") or {}
    if (
        not isinstance(examples, dict)
        or len(examples) < 2
        or not all(isinstance(v, list) and v and all(isinstance(t, str) for t in v) for v in examples.values())
    ):
        raise Invalid("The classifier's config needs examples for at least two labels.", field="config.examples")
    k = max(1, int(call.config.get("k", 3)))
    labels, vectors = _labelled_vectors(examples)
    query = _unit(call.run.embedding(_question(call)))
    scores = np.array([float(np.sort(rows @ query)[-k:].mean()) for rows in vectors])
    order = np.argsort(-scores)
    return {
        "intent": labels[int(order[0])],
        "confidence": round(float(scores[order[0]] - scores[order[1]]), 4),
        "scores": {label: round(float(score), 4) for label, score in zip(labels, scores, strict=True)},
    }


def corrections_recall(call: ToolCall) -> dict:
    """The user's own corrections of prompts like this one (correction memory), as guidance for
    the answer. Thresholds come from the tool's config (data)."""
    from apps.training import selectors as training_selectors
    from apps.training.services import CORRECTION_DEFAULTS

    # The call's config is this tool's own; reading the global spec again would cost a query.
    settings_ = {**CORRECTION_DEFAULTS, **{k: v for k, v in call.config.items() if k != "template"}}
    if not training_selectors.corrections_exist(actor=call.run.actor):
        return {"corrections_text": "", "correction_ids": []}
    found = training_selectors.corrections_recall(
        actor=call.run.actor,
        embedding=call.run.embedding(_question(call)),
        min_similarity=float(settings_["min_similarity"]),
        limit=int(settings_["max_items"]),
    )
    if not found:
        return {"corrections_text": "", "correction_ids": []}
    template = call.config.get("template") or "The user has corrected earlier answers:\n{items}"
    items = "\n".join(f"Question: {event.prompt}\nCorrect answer: {event.correction}" for event, _ in found)
    return {
        "corrections_text": template.replace("{items}", items),
        "correction_ids": [str(event.pk) for event, _ in found],
        "similarities": [round(similarity, 4) for _, similarity in found],
    }


def memory_recall(call: ToolCall) -> dict:
    """What the user asked to be remembered: the nearest items of the last `window_days`
    (default 14, up to `max_items`, default 3), plus pinned ones."""
    from apps.training import selectors as training_selectors

    window_days = int(call.config.get("window_days", 14))
    if not training_selectors.memory_exists(actor=call.run.actor, window_days=window_days, now=call.run.now):
        return {"memory_text": "", "memory_ids": []}
    found = training_selectors.memory_recall(
        actor=call.run.actor,
        embedding=call.run.embedding(_question(call)),
        window_days=window_days,
        limit=int(call.config.get("max_items", 3)),
        min_similarity=float(call.config.get("min_similarity", 0.2)),
        now=call.run.now,
    )
    if not found:
        return {"memory_text": "", "memory_ids": []}
    template = call.config.get("template") or "What you know about the user:\n{items}"
    item_template = call.config.get("item_template") or "- The user said: {text}"
    items = "\n".join(item_template.replace("{text}", item.text) for item, _ in found)
    return {
        "memory_text": template.replace("{items}", items),
        "memory_ids": [str(item.pk) for item, _ in found],
    }


def memory_extract(call: ToolCall) -> dict:
    """Stores what a message like "remember that I use Fedora" asks to remember (the patterns
    are the tool's config)."""
    from apps.training import services as training_services

    fact = training_services.remember_request(_question(call), call.config.get("patterns") or [])
    if fact is None:
        return {"remembered": None}
    source = call.run.message.parent if call.run.message is not None else None
    item = training_services.memory_remember(actor=call.run.actor, text=fact, source_message=source)
    return {"remembered": item.text, "memory_id": str(item.pk)}


HANDLERS = {
    "corrections.recall": corrections_recall,
    "memory.recall": memory_recall,
    "memory.extract": memory_extract,
    "llm.generic_chat": generic_chat,
    "rag.answer_with_context": rag_answer,
    "llm.intent_classifier": intent_classifier,
}


def register() -> None:
    for name, handler in HANDLERS.items():
        register_handler(name, handler)
