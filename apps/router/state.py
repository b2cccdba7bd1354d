"""Writes of the router's per-adapter state."""

import numpy as np
from django.db import transaction
from django.utils import timezone

from apps.router.models import AdapterRouterState


@transaction.atomic
def centroid_add(*, adapter, embeddings) -> AdapterRouterState:
    """Fold embeddings into the adapter's running-mean centroid (what it was trained on)."""
    state, _ = AdapterRouterState.objects.select_for_update().get_or_create(adapter=adapter)
    vectors = np.asarray(list(embeddings), dtype=np.float64)
    if vectors.size == 0:
        return state
    total = vectors.sum(axis=0)
    if state.centroid is not None and state.centroid_count:
        total += np.asarray(state.centroid, dtype=np.float64) * state.centroid_count
    state.centroid_count += len(vectors)
    state.centroid = (total / state.centroid_count).tolist()
    state.updated_at = timezone.now()
    state.save()
    return state


@transaction.atomic
def centroid_set(*, adapter, embeddings) -> AdapterRouterState | None:
    """The adapter's centroid becomes the mean of what its served version was trained on (a
    retrained version replaces it: the new one was trained on the old one's data and more)."""
    vectors = np.asarray(list(embeddings), dtype=np.float64)
    if vectors.size == 0:
        return None
    state, _ = AdapterRouterState.objects.select_for_update().get_or_create(adapter=adapter)
    state.centroid = vectors.mean(axis=0).tolist()
    state.centroid_count = len(vectors)
    state.updated_at = timezone.now()
    state.save()
    return state


def on_version_saved(sender, instance, **kwargs) -> None:
    """A skill adapter's version was promoted: point its centroid at that version's training
    signals once the promotion commits (the router reads the centroid to route to it)."""
    from apps.training.models import AdapterVersion

    if instance.status != AdapterVersion.Status.PROMOTED or instance.adapter.body.get("scope") != "skill":
        return

    def update():
        embeddings = [e for e in instance.trained_on.values_list("prompt_embedding", flat=True) if e is not None]
        centroid_set(adapter=instance.adapter, embeddings=embeddings)

    transaction.on_commit(update)


def usage_record(*, adapter_ids) -> None:
    """Each adapter the router chose for an answer counts one use (one UPDATE for all of them)."""
    from django.db.models import F

    ids = [str(i) for i in adapter_ids]
    if not ids:
        return
    existing = set(AdapterRouterState.objects.filter(adapter_id__in=ids).values_list("adapter_id", flat=True))
    for missing in set(ids) - {str(i) for i in existing}:
        AdapterRouterState.objects.get_or_create(adapter_id=missing)
    AdapterRouterState.objects.filter(adapter_id__in=ids).update(
        usage_count=F("usage_count") + 1, updated_at=timezone.now()
    )


@transaction.atomic
def judgement_record(*, adapter_ids, score: float) -> None:
    """A judged answer moves the success score (a running mean) of every adapter it used."""
    for state in AdapterRouterState.objects.select_for_update().filter(adapter_id__in=[str(i) for i in adapter_ids]):
        state.success_score = (state.success_score * state.judged_count + score) / (state.judged_count + 1)
        state.judged_count += 1
        state.updated_at = timezone.now()
        state.save(update_fields=["success_score", "judged_count", "updated_at"])


def on_event_saved(sender, instance, created, **kwargs) -> None:
    """A thumb, correction or pick on an answer the router gated: its adapters' success moves
    (routing feedback judges the choice itself, so it counts too)."""
    if not created or instance.score is None or not instance.adapter_gates or instance.is_evaluation:
        return
    adapter_ids = [gate.get("adapter_id") for gate in instance.adapter_gates if gate.get("adapter_id")]
    score = max(-1.0, min(1.0, float(instance.score)))
    transaction.on_commit(lambda: judgement_record(adapter_ids=adapter_ids, score=score))
