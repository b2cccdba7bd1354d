"""Routing decisions from a policy: rules in order, weights by similarity to a centroid, the
floor, normalisation and the top three, and a trace that says which rule did what."""

from workers.policy.routing import Candidate, decide, needs_embedding

PERSONA = Candidate("p", "persona-7", "persona", 2)
ON_X = Candidate("x", "skill-x", "skill", 1, cluster_id="cx", centroid=(1.0, 0.0, 0.0))
ON_Y = Candidate("y", "skill-y", "skill", 1, cluster_id="cy", centroid=(0.0, 1.0, 0.0))
POLICY = {
    "kind": "policy.routing",
    "max_active_adapters": 3,
    "weight_floor": 0.5,
    "rules": [
        {
            "id": "persona",
            "when": "true",
            "action": {"type": "activate_adapter_by_type", "adapter_type": "persona", "weight": 0.4},
        },
        {
            "id": "nearest_skill",
            "when": "adapter_type == 'skill'",
            "action": {"type": "activate_adapter_by_type", "adapter_type": "skill", "weight": "similarity"},
        },
        {"id": "safety_off", "when": "safety_risk == 'high'", "action": {"type": "deactivate_all_adapters"}},
    ],
}


def scope(embedding, risk="low"):
    return {
        "ctx_embedding": list(embedding),
        "safety_risk": risk,
        "has_context": False,
        "intent": None,
        "ctx_cluster": None,
        "user": {"plan": "free"},
    }


def test_a_prompt_near_a_skill_gets_that_skill_and_not_the_other():
    near_x = decide(POLICY, [PERSONA, ON_X, ON_Y], scope((0.95, 0.1, 0.0)))
    assert set(near_x.weights) == {"x"} or set(near_x.weights) == {"x", "p"}
    assert "y" not in near_x.weights and near_x.weights["x"] >= 0.5
    fired = {entry["id"]: entry for entry in near_x.trace}
    assert fired["nearest_skill"]["fired"] is True and "skill-x at 0.99" in " ".join(fired["nearest_skill"]["effect"])
    assert any("skill-y dropped" in effect for effect in fired["limits"]["effect"])
    near_y = decide(POLICY, [PERSONA, ON_X, ON_Y], scope((0.0, 1.0, 0.1)))
    assert "y" in near_y.weights and "x" not in near_y.weights
    off_topic = decide(POLICY, [PERSONA, ON_X, ON_Y], scope((0.0, 0.0, 1.0)))
    assert "x" not in off_topic.weights and "y" not in off_topic.weights


def test_weights_are_normalised_and_the_floor_applies_after():
    policy = {**POLICY, "weight_floor": 0.0}
    decision = decide(policy, [PERSONA, ON_X], scope((1.0, 0.0, 0.0)))
    assert abs(sum(decision.weights.values()) - 1.0) < 1e-9  # 0.4 + 1.0, normalised
    assert list(decision.weights) == ["x", "p"]  # heaviest first


def test_high_safety_risk_turns_everything_off():
    decision = decide(POLICY, [PERSONA, ON_X], scope((1.0, 0.0, 0.0), risk="high"))
    assert decision.weights == {}
    assert next(e for e in decision.trace if e["id"] == "safety_off")["fired"] is True


def test_an_evaluation_error_is_recorded_and_the_rule_does_not_fire():
    policy = {
        "rules": [
            {
                "id": "broken",
                "when": "intent > 3",
                "action": {"type": "activate_adapter_by_type", "adapter_type": "persona"},
            }
        ]
    }
    decision = decide(policy, [PERSONA], {**scope((1, 0, 0)), "intent": "question"})
    (entry,) = decision.trace
    assert entry["fired"] == "error" and "cannot compare text with a number" in entry["error"]
    assert decision.weights == {}


def test_only_the_heaviest_three_are_kept_and_scaling_and_deactivation_apply():
    many = [Candidate(str(i), f"skill-{i}", "skill", 1, centroid=(1.0, i / 10, 0.0)) for i in range(5)]
    policy = {
        "max_active_adapters": 3,
        "rules": [
            {
                "id": "all",
                "when": "true",
                "action": {"type": "activate_adapter_by_type", "adapter_type": "skill", "weight": 0.2},
            },
            {"id": "boost", "when": "true", "action": {"type": "scale_adapter_weight", "adapter_id": "4", "scale": 2}},
            {"id": "drop0", "when": "true", "action": {"type": "deactivate_adapter", "adapter_id": "0"}},
        ],
    }
    decision = decide(policy, many, scope((1, 0, 0)))
    assert list(decision.weights)[0] == "4" and len(decision.weights) == 3 and "0" not in decision.weights
    assert any("only the 3 heaviest" in e for e in decision.trace[-1]["effect"])


def test_the_embedding_is_needed_only_when_a_rule_reads_it():
    assert needs_embedding(POLICY)
    plain = {
        "rules": [
            {
                "id": "p",
                "when": "safety_risk != 'high'",
                "action": {"type": "activate_adapter_by_type", "adapter_type": "persona", "weight": 1},
            }
        ]
    }
    assert not needs_embedding(plain)
    assert needs_embedding(
        {"rules": [{"id": "e", "when": "len(ctx_embedding) > 0", "action": plain["rules"][0]["action"]}]}
    )
