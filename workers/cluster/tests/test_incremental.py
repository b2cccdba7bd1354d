import numpy as np
import pytest

from workers.cluster import (
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


def unit(*values):
    vector = np.asarray(values, dtype=np.float64)
    return vector / np.linalg.norm(vector)


def test_an_event_joins_the_nearest_cluster_within_the_threshold_else_none():
    clusters = [ClusterView("a", unit(1, 0, 0), 3), ClusterView("b", unit(0, 1, 0), 3)]
    assert assign(unit(0.9, 0.1, 0), clusters, 0.55)[0] == "a"
    assert assign(unit(0.1, 0.9, 0), clusters, 0.55)[0] == "b"
    chosen, similarity = assign(unit(0, 0, 1), clusters, 0.55)
    assert chosen is None and similarity == pytest.approx(0.0, abs=1e-9)
    assert assign(unit(1, 0, 0), [], 0.55) == (None, None)


def test_the_running_mean_is_the_mean_of_every_member():
    vectors = [unit(1, 0), unit(0, 1), unit(1, 1)]
    centroid = None
    for size, vector in enumerate(vectors):
        centroid = running_mean(centroid, size, vector)
    np.testing.assert_allclose(centroid, np.mean(vectors, axis=0))


def test_cohesion_is_high_for_a_tight_group_and_low_for_a_loose_one():
    tight = [unit(1, 0.05), unit(1, -0.05), unit(1, 0)]
    loose = [unit(1, 0), unit(-1, 0.1), unit(0, 1)]
    assert cohesion(tight) > 0.99 > cohesion(loose)
    assert cohesion([]) == 0.0 and cohesion([unit(1, 0)]) == pytest.approx(1.0)


def test_merging_keeps_the_larger_clusters_id_and_takes_each_cluster_once_per_pass():
    clusters = [
        ClusterView("small", unit(1, 0.01, 0), 2),
        ClusterView("large", unit(1, 0, 0), 9),
        ClusterView("twin", unit(1, -0.01, 0), 4),
        ClusterView("far", unit(0, 0, 1), 20),
    ]
    plan = merge_plan(clusters, 0.85)
    assert len(plan) == 1  # small, large and twin are all close; one merge per cluster per pass
    absorbed, survivor, similarity = plan[0]
    assert survivor == "large" and absorbed in ("small", "twin") and similarity > 0.99
    assert merge_plan([clusters[3]], 0.85) == []
    # At equal sizes the one listed first (the older) keeps its id.
    assert merge_plan([ClusterView("old", unit(1, 0), 3), ClusterView("new", unit(1, 0.01), 3)], 0.85)[0][:2] == (
        "new",
        "old",
    )


def test_members_drain_only_into_larger_clusters_that_fit_them():
    topic = [unit(1, 0.1 * i, 0) for i in range(-3, 4)]
    fragment = [unit(1, 0.35, 0.05)]
    stranger = [unit(0, 0, 1)]
    moves = reassignments([("topic", topic), ("fragment", fragment), ("stranger", stranger)], 0.55)
    assert moves == [("fragment", 0, "topic")]
    # The larger cluster never loses a member to a smaller one, however close.
    assert not [m for m in moves if m[0] == "topic"]


def test_a_split_keeps_the_larger_half_on_the_true_side():
    left = [unit(1, 0.1 * i, 0) for i in range(5)]
    right = [unit(0, 0.1 * i, 1) for i in range(3)]
    mask = split_in_two(left + right)
    assert mask.tolist() == [True] * 5 + [False] * 3
    assert split_in_two([unit(1, 0)]).tolist() == [True]


def test_the_map_projection_is_stable_in_sign_and_shape():
    vectors = np.random.default_rng(0).normal(size=(6, 384))
    first, second = project_2d(vectors), project_2d(vectors.copy())
    assert first.shape == (6, 2)
    np.testing.assert_allclose(first, second)
    assert project_2d(vectors[:1]).tolist() == [[0.0, 0.0]] and project_2d([]).shape == (0, 2)


def test_thresholds_come_from_data_and_ignore_unknown_keys():
    limits = Thresholds.from_dict({"join_similarity": 0.6, "label_samples": 4, "skill": {}})
    assert limits.join_similarity == 0.6 and limits.merge_similarity == Thresholds().merge_similarity
