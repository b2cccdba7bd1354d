"""Writes of what users tell the platform: feedback, corrections, preference pairs, memory, and
forgetting. Every function takes the acting user; objects of other users raise NotFound."""

import logging
import re

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from pgvector.django import CosineDistance

from apps.training import skills
from apps.training.models import AdapterVersion, MemoryItem, PreferenceEvent
from liminal.errors import Invalid, ensure_owner

logger = logging.getLogger(__name__)

THUMBS = (PreferenceEvent.Kind.THUMBS_UP, PreferenceEvent.Kind.THUMBS_DOWN)
POSITIVE = {"positive", "like", "thumbs_up"}
NEGATIVE = {"negative", "dislike", "thumbs_down"}
REASONS = ("wrong", "unhelpful", "unsafe", "other")
MEMORY_TEXT_MAX = 2000
# Correction memory's thresholds when its tool's config does not say.
CORRECTION_DEFAULTS = {"min_similarity": 0.80, "max_items": 3, "replace_similarity": 0.95}


def embed(text: str) -> list[float]:
    """The MiniLM embedding the knowledge search uses too (one encoder per process)."""
    from workers.embed import get_encoder

    return get_encoder(settings.KNOWLEDGE_ENCODER_PATH or None).encode([text], batch_size=1)[0].tolist()


def _snapshot(message) -> dict:
    """What an event keeps of the judged answer: its prompt, text and receipt."""
    return {
        "message": message,
        "conversation_id": message.conversation_id,
        "prompt": message.parent.content if message.parent_id else "",
        "answer": message.content,
        "receipt": message.receipt or {},
    }


def _ensure_finished_answer(message, field: str) -> None:
    if message.role != "assistant" or message.status in ("queued", "streaming"):
        raise Invalid("Only finished answers can be judged.", field=field)


def _kind_of(*, feedback: str, explicit_signal: str, corrected_text: str, routing: bool) -> str:
    if routing or explicit_signal == "routing_feedback":
        return PreferenceEvent.Kind.ROUTING
    if corrected_text or explicit_signal in ("correction", "edit"):
        return PreferenceEvent.Kind.CORRECTION
    if explicit_signal in POSITIVE or (not explicit_signal and feedback in POSITIVE):
        return PreferenceEvent.Kind.THUMBS_UP
    if explicit_signal in NEGATIVE or (not explicit_signal and feedback in NEGATIVE):
        return PreferenceEvent.Kind.THUMBS_DOWN
    return PreferenceEvent.Kind.FEEDBACK


def _default_score(feedback: str) -> float:
    return 1.0 if feedback in POSITIVE else -1.0 if feedback in NEGATIVE else 0.0


@transaction.atomic
def feedback_record(
    *,
    actor,
    message,
    feedback: str,
    explicit_signal: str = "",
    score: float | None = None,
    corrected_text: str = "",
    context_text: str = "",
    weight: float | None = None,
    notes: str = "",
    reasons=(),
    routing_trace=None,
    adapter_gates=None,
    routing: bool = False,
) -> PreferenceEvent:
    """One judgement of an answer. A thumb replaces the user's earlier thumb on that answer; a
    correction (the user's better answer) also replaces, in correction memory, their older
    corrections of nearly the same prompt."""
    ensure_owner(message, actor, "Message not found.")
    _ensure_finished_answer(message, "message_id")
    corrected_text = (corrected_text or "").replace("\x00", "").strip()
    kind = _kind_of(
        feedback=feedback, explicit_signal=explicit_signal or "", corrected_text=corrected_text, routing=routing
    )
    if kind == PreferenceEvent.Kind.CORRECTION and not corrected_text:
        raise Invalid("A correction needs the better answer.", field="corrected_text")
    unknown = [reason for reason in reasons if reason not in REASONS]
    if unknown:
        raise Invalid(f"Unknown reason {unknown[0]!r}; use {', '.join(REASONS)}.", field="reasons")
    snapshot = _snapshot(message)
    if kind in THUMBS or kind == PreferenceEvent.Kind.CORRECTION:
        # One thumb per answer; a correction stands in for the thumbs down it came with.
        PreferenceEvent.objects.filter(owner=actor, message=message, kind__in=THUMBS, excluded_at=None).delete()
    event = PreferenceEvent.objects.create(
        owner=actor,
        kind=kind,
        feedback=feedback,
        explicit_signal=explicit_signal or "",
        score=_default_score(feedback) if score is None else score,
        weight=weight,
        notes=notes or "",
        reasons=list(reasons),
        correction=corrected_text,
        context_text=context_text or "",
        routing_trace=routing_trace or snapshot["receipt"].get("routing_trace") or [],
        adapter_gates=adapter_gates or snapshot["receipt"].get("adapter_gates") or [],
        prompt_embedding=embed(snapshot["prompt"]) if snapshot["prompt"] else None,
        **snapshot,
    )
    if kind == PreferenceEvent.Kind.CORRECTION and event.prompt_embedding is not None:
        replace_at = correction_settings()["replace_similarity"]
        PreferenceEvent.objects.filter(
            owner=actor, kind=PreferenceEvent.Kind.CORRECTION, superseded_by=None, excluded_at=None
        ).exclude(pk=event.pk).alias(distance=CosineDistance("prompt_embedding", event.prompt_embedding)).filter(
            distance__lte=1 - replace_at
        ).update(superseded_by=event)
    _check_triggers_after_commit(actor)
    skills.queue_event(event)
    return event


def _check_triggers_after_commit(actor) -> None:
    """Once the signal is stored, see whether it starts a training job. The signal is kept
    whatever happens there, so a failure is logged, not raised."""
    from apps.training import triggers

    def check():
        try:
            triggers.after_signal(actor=actor)
        except Exception:
            logger.exception("Checking the training triggers after a signal failed")

    transaction.on_commit(check)


def thumbs_set(*, actor, message, kind: str | None) -> PreferenceEvent | None:
    """The UI's thumb toggle: one per answer; None clears it."""
    ensure_owner(message, actor, "Message not found.")
    if kind is None:
        PreferenceEvent.objects.filter(owner=actor, message=message, kind__in=THUMBS, excluded_at=None).delete()
        return None
    if kind not in THUMBS:
        raise Invalid(f"Unknown thumb {kind!r}.", field="kind")
    feedback = "positive" if kind == PreferenceEvent.Kind.THUMBS_UP else "negative"
    return feedback_record(actor=actor, message=message, feedback=feedback, explicit_signal=kind)


@transaction.atomic
def pick_record(*, actor, chosen, rejected) -> PreferenceEvent:
    """After regenerating, the user kept `chosen` over its sibling `rejected`: a preference pair."""
    ensure_owner(chosen, actor, "Message not found.")
    ensure_owner(rejected, actor, "Message not found.")
    _ensure_finished_answer(chosen, "chosen_message_id")
    _ensure_finished_answer(rejected, "rejected_message_id")
    if chosen.pk == rejected.pk or chosen.parent_id != rejected.parent_id or chosen.role != "assistant":
        raise Invalid("A pair is two answers to the same message.", field="rejected_message_id")
    PreferenceEvent.objects.filter(
        owner=actor, kind=PreferenceEvent.Kind.PICK, message__parent_id=chosen.parent_id, excluded_at=None
    ).delete()
    snapshot = _snapshot(chosen)
    _check_triggers_after_commit(actor)
    event = PreferenceEvent.objects.create(
        owner=actor,
        kind=PreferenceEvent.Kind.PICK,
        feedback="positive",
        explicit_signal="pick",
        score=1.0,
        rejected_message=rejected,
        rejected_answer=rejected.content,
        prompt_embedding=embed(snapshot["prompt"]) if snapshot["prompt"] else None,
        **snapshot,
    )
    skills.queue_event(event)
    return event


def _forget_events(events) -> int:
    """Excluded from every future dataset, and the user's words dropped; the row stays as a
    tombstone, and every adapter version trained on it is flagged for retraining without it."""
    now = timezone.now()
    AdapterVersion.objects.filter(trained_on__in=events, tainted_at=None).update(tainted_at=now)
    skills.memberships_forget(events)
    return events.filter(excluded_at=None).update(
        excluded_at=now,
        prompt="",
        answer="",
        correction="",
        rejected_answer="",
        context_text="",
        notes="",
        prompt_embedding=None,
    )


def event_forget(*, actor, event: PreferenceEvent) -> None:
    ensure_owner(event, actor, "Feedback not found.")
    _forget_events(PreferenceEvent.objects.filter(pk=event.pk))


def correction_settings() -> dict:
    """Correction memory's thresholds: data in the `corrections.recall_v1` tool's config."""
    from apps.artifacts.selectors import global_artifact

    defaults = CORRECTION_DEFAULTS
    tool = global_artifact(kind="tool.spec", name="corrections.recall_v1")
    config = (tool.body.get("config") or {}) if tool is not None and tool.current_version_id else {}
    return {**defaults, **{k: config[k] for k in defaults if k in config}}


# ---------------------------------------------------------------- long-term memory


def _clean_memory_text(text) -> str:
    if not isinstance(text, str):
        raise Invalid("Must be text.", field="text")
    text = " ".join(text.replace("\x00", "").split())
    if not text:
        raise Invalid("Say what to remember.", field="text")
    if len(text) > MEMORY_TEXT_MAX:
        raise Invalid(f"At most {MEMORY_TEXT_MAX} characters.", field="text")
    return text


def memory_remember(*, actor, text, source_message=None, pinned: bool = False) -> MemoryItem:
    text = _clean_memory_text(text)
    if source_message is not None:
        ensure_owner(source_message, actor, "Message not found.")
    return MemoryItem.objects.create(
        owner=actor, text=text, embedding=embed(text), source_message=source_message, pinned=bool(pinned)
    )


def memory_update(*, actor, item: MemoryItem, text=None, pinned=None) -> MemoryItem:
    ensure_owner(item, actor, "Memory item not found.")
    if text is not None:
        item.text = _clean_memory_text(text)
        item.embedding = embed(item.text)
    if pinned is not None:
        item.pinned = bool(pinned)
    item.updated_at = timezone.now()
    item.save()
    return item


@transaction.atomic
def memory_forget(*, actor, item: MemoryItem) -> None:
    """Gone from recall at once; the signals given on answers to the message that asked for it
    are excluded from training too."""
    ensure_owner(item, actor, "Memory item not found.")
    if item.source_message_id:
        _forget_events(PreferenceEvent.objects.filter(owner=actor, message__parent_id=item.source_message_id))
    item.delete()


def remember_request(text: str, patterns: list[str]) -> str | None:
    """The fact in a message like "remember that I use Fedora", by the first of `patterns`
    (regular expressions with a `fact` group, the memory tool's config) that matches."""
    for pattern in patterns:
        match = re.match(pattern, text or "", re.IGNORECASE | re.DOTALL)
        if match and match.group("fact").strip():
            return match.group("fact").strip()
    return None
