"""Incremental clustering with stable ids: the numeric part (numpy only, no Django).

An event joins the nearest cluster whose centroid is within `join_similarity` (cosine), moving
that centroid as a running mean, or starts a cluster of its own. A periodic pass then moves
members of small fragments into the larger cluster they fit (`reassignments`), merges clusters
whose centroids have come within `merge_similarity` (the smaller one is absorbed, so the larger
keeps its id), splits a cluster whose cohesion fell below `split_cohesion` in two (the larger
half keeps the id), and reports clusters left empty. Ids are the caller's: nothing here
renumbers anything.
"""

from workers.cluster.incremental import (
    ClusterView,
    Thresholds,
    assign,
    cohesion,
    merge_plan,
    project_2d,
    reassignments,
    running_mean,
    split_in_two,
)

__all__ = [
    "ClusterView",
    "Thresholds",
    "assign",
    "cohesion",
    "merge_plan",
    "project_2d",
    "reassignments",
    "running_mean",
    "split_in_two",
]
