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
