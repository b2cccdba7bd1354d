"""Cosine clustering of unit-length embeddings, one event at a time, with a periodic tidy-up."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np


@dataclass(frozen=True)
class Thresholds:
    """The clustering's knobs (data: the `clustering` section of the training policy)."""

    join_similarity: float = 0.55  # an event joins the nearest cluster at least this close
    merge_similarity: float = 0.6  # two clusters whose centroids are this close become one
    split_cohesion: float = 0.45  # a cluster whose members sit further than this is split
    min_split_size: int = 6  # smaller clusters are never split: too few to tell two topics
    active_size: int = 5  # a forming cluster becomes active at this size

    @classmethod
    def from_dict(cls, data: dict | None) -> Thresholds:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (data or {}).items() if k in known})


@dataclass(frozen=True)
class ClusterView:
    """What the numeric part needs of a cluster: its id, centroid (a running mean) and size."""

    id: str
    centroid: np.ndarray
    size: int


def _unit(vector) -> np.ndarray:
    vector = np.asarray(vector, dtype=np.float64)
    norm = np.linalg.norm(vector)
    return vector / norm if norm else vector


def cosine(a, b) -> float:
    return float(np.dot(_unit(a), _unit(b)))


def assign(vector, clusters: list[ClusterView], join_similarity: float) -> tuple[str | None, float | None]:
    """(id of the nearest cluster, similarity) when it is within `join_similarity`; else
    (None, the best similarity seen, or None when there is no cluster)."""
    if not clusters:
        return None, None
    centroids = np.stack([_unit(c.centroid) for c in clusters])
    similarities = centroids @ _unit(vector)
    best = int(np.argmax(similarities))
    similarity = float(similarities[best])
    return (clusters[best].id if similarity >= join_similarity else None), similarity


def running_mean(centroid, size: int, vector) -> np.ndarray:
    """The centroid after one more member: the mean moves by 1/(size+1) towards it."""
    if centroid is None or size <= 0:
        return np.asarray(vector, dtype=np.float64)
    return (np.asarray(centroid, dtype=np.float64) * size + np.asarray(vector, dtype=np.float64)) / (size + 1)


def cohesion(members, centroid=None) -> float:
    """Mean cosine between the members and their centroid (1.0 for one member, 0 for none)."""
    members = np.asarray(members, dtype=np.float64)
    if members.size == 0:
        return 0.0
    centroid = members.mean(axis=0) if centroid is None else np.asarray(centroid, dtype=np.float64)
    norms = np.linalg.norm(members, axis=1) * (np.linalg.norm(centroid) or 1.0)
    norms[norms == 0] = 1.0
    return float(np.mean(members @ centroid / norms))


def reassignments(groups: list[tuple[str, object]], join_similarity: float) -> list[tuple[str, int, str]]:
    """[(from id, member index, to id)]: members that belong in a larger cluster. A member moves
    when a larger cluster's centroid is within `join_similarity` and closer than the centroid
    of its own cluster's other members (a lone member has none). Joining one event at a time
    depends on arrival order: a topic's first events start several fragments before one
    centroid settles; this drains the fragments into the cluster that did, and since members
    only ever move to larger clusters, the established ids stay put."""
    sized = [
        (cluster_id, np.stack([_unit(v) for v in np.asarray(vectors, dtype=np.float64)]))
        for cluster_id, vectors in groups
        if len(vectors)
    ]
    centroids = {cluster_id: _unit(vectors.mean(axis=0)) for cluster_id, vectors in sized}
    sizes = {cluster_id: len(vectors) for cluster_id, vectors in sized}
    moves = []
    for cluster_id, vectors in sized:
        larger = [other for other, _ in sized if sizes[other] > sizes[cluster_id]]
        if not larger:
            continue
        targets = np.stack([centroids[other] for other in larger])
        total = vectors.sum(axis=0)
        for index, vector in enumerate(vectors):
            rest = total - vector
            own = float(vector @ _unit(rest)) if len(vectors) > 1 and np.any(rest) else -1.0
            similarities = targets @ vector
            best = int(np.argmax(similarities))
            if similarities[best] >= join_similarity and similarities[best] > own:
                moves.append((cluster_id, index, larger[best]))
    return moves


def merge_plan(clusters: list[ClusterView], merge_similarity: float) -> list[tuple[str, str, float]]:
    """[(absorbed id, surviving id, similarity)] for this pass: the closest pairs first, each
    cluster in at most one merge (a chain settles over later passes). The larger survives; at
    equal sizes the one listed first (the caller lists the oldest first), so ids stay put."""
    if len(clusters) < 2:
        return []
    centroids = np.stack([_unit(c.centroid) for c in clusters])
    similarities = centroids @ centroids.T
    pairs = [
        (float(similarities[i, j]), i, j)
        for i in range(len(clusters))
        for j in range(i + 1, len(clusters))
        if similarities[i, j] >= merge_similarity
    ]
    taken: set[int] = set()
    plan = []
    for similarity, i, j in sorted(pairs, key=lambda p: (-p[0], p[1], p[2])):
        if i in taken or j in taken:
            continue
        keep, absorb = (i, j) if clusters[i].size >= clusters[j].size else (j, i)
        plan.append((clusters[absorb].id, clusters[keep].id, similarity))
        taken.update((i, j))
    return plan


def split_in_two(members, iterations: int = 25) -> np.ndarray:
    """A boolean mask over the members: True for the larger of two halves found by spherical
    2-means (seeded deterministically with the member furthest from the centroid and the member
    furthest from that one), so the caller keeps the cluster's id on the True side."""
    members = np.stack([_unit(m) for m in np.asarray(members, dtype=np.float64)])
    if len(members) < 2:
        return np.ones(len(members), dtype=bool)
    centroid = _unit(members.mean(axis=0))
    first = int(np.argmin(members @ centroid))
    second = int(np.argmin(members @ members[first]))
    seeds = np.stack([members[first], members[second]])
    side = np.zeros(len(members), dtype=bool)
    for _ in range(iterations):
        new_side = (members @ seeds[0]) >= (members @ seeds[1])
        if new_side.all() or not new_side.any():
            break
        if np.array_equal(new_side, side):
            break
        side = new_side
        seeds = np.stack([_unit(members[side].mean(axis=0)), _unit(members[~side].mean(axis=0))])
    if side.sum() * 2 < len(side):
        side = ~side
    return side


def project_2d(vectors) -> np.ndarray:
    """Two coordinates per vector (principal components), for drawing clusters on a map."""
    vectors = np.asarray(vectors, dtype=np.float64)
    if len(vectors) == 0:
        return np.zeros((0, 2))
    centred = vectors - vectors.mean(axis=0)
    if len(vectors) == 1 or not np.any(centred):
        return np.zeros((len(vectors), 2))
    _, _, components = np.linalg.svd(centred, full_matrices=False)
    projected = centred @ components[:2].T
    if projected.shape[1] < 2:
        projected = np.hstack([projected, np.zeros((len(vectors), 1))])
    # A component's sign is arbitrary; fix it so the map does not flip between draws.
    for axis in range(2):
        if projected[np.argmax(np.abs(projected[:, axis])), axis] < 0:
            projected[:, axis] *= -1
    return projected
