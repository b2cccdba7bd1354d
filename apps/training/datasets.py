"""Training datasets from what one user told the platform.

Only the user's own live signals: never another user's, never forgotten (excluded) ones, never
evaluation traffic. Corrections and liked answers are SFT targets; regenerate-and-pick pairs are
DPO pairs (chosen, rejected); a thumbs down without a better answer teaches nothing by itself.
"""

import hashlib
import json
import math
from pathlib import Path

from django.conf import settings

from apps.training.models import PreferenceEvent

MAX_EXAMPLE_TOKENS = 2000
HELD_OUT_FRACTION = 0.10


def _example(event: PreferenceEvent) -> dict | None:
    base = {
        "prompt": event.prompt,
        "weight": event.weight if event.weight is not None else 1.0,
        "conversation_id": str(event.conversation_id) if event.conversation_id else None,
        "message_id": str(event.message_id) if event.message_id else None,
        "event_id": str(event.pk),
        "kind": event.kind,
        "created_at": event.created_at.isoformat(),
    }
    if event.kind == PreferenceEvent.Kind.CORRECTION and event.correction:
        return {**base, "target": event.correction}
    if event.kind == PreferenceEvent.Kind.THUMBS_UP and event.answer:
        return {**base, "target": event.answer}
    if event.kind == PreferenceEvent.Kind.PICK and event.answer and event.rejected_answer:
        return {**base, "target": event.answer, "rejected": event.rejected_answer}
    return None


def training_examples(*, actor, count_tokens=None, max_tokens: int = MAX_EXAMPLE_TOKENS, event_ids=None) -> list[dict]:
    """The actor's examples, oldest first, deduplicated on (prompt, target, rejected) keeping the
    newest; with `count_tokens`, examples over `max_tokens` are left out; with `event_ids`, only
    those events (still only the actor's)."""
    events = PreferenceEvent.objects.filter(
        owner=actor, excluded_at=None, is_evaluation=False, superseded_by=None
    ).order_by("created_at")
    if event_ids is not None:
        events = events.filter(pk__in=event_ids)
    latest: dict[tuple, dict] = {}
    for event in events:
        example = _example(event)
        if example is None or not example["prompt"].strip():
            continue
        if count_tokens is not None and count_tokens(example) > max_tokens:
            continue
        key = (example["prompt"].strip(), example["target"].strip(), example.get("rejected"))
        latest.pop(key, None)
        latest[key] = example
    return list(latest.values())


def split_held_out(
    examples: list[dict], fraction: float = HELD_OUT_FRACTION, minimum: int = 0
) -> tuple[list[dict], list[dict]]:
    """The most recent `fraction` is held out for the gate; at least `minimum` once there are
    twice that many, so the gate has enough to judge by."""
    held = math.floor(len(examples) * fraction)
    if len(examples) >= 2 * minimum:
        held = max(held, minimum)
    if held == 0:
        return list(examples), []
    return list(examples[:-held]), list(examples[-held:])


def dataset_dir(*, user_id, adapter_id, job_id) -> Path:
    return Path(settings.SHARED_FS_ROOT) / "users" / str(user_id) / "adapters" / str(adapter_id) / "jobs" / str(job_id)


def dataset_write(*, user_id, adapter_id, job_id, examples: list[dict]) -> tuple[Path, str]:
    """dataset.jsonl for a job, and the hash a job is keyed on (same data, same hash)."""
    lines = [json.dumps(example, sort_keys=True, ensure_ascii=False) for example in examples]
    digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()
    path = dataset_dir(user_id=user_id, adapter_id=adapter_id, job_id=job_id) / "dataset.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + ("\n" if lines else ""), encoding="utf-8")
    return path, digest
