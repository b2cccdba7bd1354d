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
