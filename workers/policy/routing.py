"""Routing decisions: which candidate adapters answer a message, with what weight, and why.

A policy (`policy.routing`) is a list of rules applied in order. A rule's `when` is evaluated
once per candidate adapter (its scope is the message's plus that adapter's `adapter_type` and
`adapter_similarity`, the message's cosine similarity to its centroid), and
once with `adapter_type` null for `deactivate_all_adapters`; where it is true the action applies
to the candidates it targets. Then weights are clamped to [0, 1], normalised when they sum above
1, those under the floor dropped and the heaviest `max_active_adapters` kept. Every rule and
every drop is in the trace; an expression that fails to evaluate is recorded as an error and
its rule does not fire (never silently false)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from workers.policy.expressions import EvaluationError, compile_expression, evaluate, names_read


@dataclass(frozen=True)
class Candidate:
    """An adapter the router may choose: `name` is the engine's name for it."""

    adapter_id: str
    name: str
    adapter_type: str  # persona | skill
    version: int
    cluster_id: str | None = None
    centroid: tuple[float, ...] | None = None


@dataclass
class Decision:
    weights: dict[str, float]  # adapter_id -> gate weight, in order of weight
    trace: list[dict] = field(default_factory=list)


def needs_embedding(policy: dict) -> bool:
    """Whether deciding reads the message's embedding (so the caller computes it only then)."""
    return any(
        (rule.get("action") or {}).get("weight") == "similarity"
        or names_read(compile_expression(rule["when"])) & {"ctx_embedding", "adapter_similarity", "ctx_cluster"}
        for rule in policy.get("rules", [])
    )


def needs_cluster(policy: dict) -> bool:
    """Whether deciding reads the message's cluster (`ctx_cluster`), so the caller looks it up."""
    return any("ctx_cluster" in names_read(compile_expression(rule["when"])) for rule in policy.get("rules", []))


def _similarity(embedding, centroid) -> float | None:
    if not embedding or not centroid or len(embedding) != len(centroid):
        return None
    norm = math.sqrt(sum(x * x for x in embedding)) * math.sqrt(sum(y * y for y in centroid))
    return sum(x * y for x, y in zip(embedding, centroid, strict=True)) / norm if norm else None


def _targets(action: dict, candidate: Candidate) -> bool:
    kind = action["type"]
    if kind == "activate_adapter_by_id" or (
        kind in ("scale_adapter_weight", "deactivate_adapter") and "adapter_id" in action
    ):
        return candidate.adapter_id == action.get("adapter_id")
    if kind == "activate_adapter_by_type" or "adapter_type" in action:
        return candidate.adapter_type == action.get("adapter_type")
    if kind == "activate_adapter_by_cluster" or "cluster_id" in action:
        return candidate.cluster_id is not None and candidate.cluster_id == action.get("cluster_id")
    return kind in ("scale_adapter_weight", "deactivate_adapter")  # no target named: every candidate


def decide(policy: dict, candidates: list[Candidate], scope: dict, *, functions=None) -> Decision:
    weights: dict[str, float] = {}
    trace: list[dict] = []
    by_id = {c.adapter_id: c for c in candidates}
    embedding = scope.get("ctx_embedding")
    for rule in policy.get("rules", []):
        action = rule["action"]
        entry = {"id": rule["id"], "when": rule["when"], "action": action["type"], "fired": False, "effect": []}
        trace.append(entry)
        tree = compile_expression(rule["when"])
        if action["type"] == "deactivate_all_adapters":
            subjects = [None]
        else:
            subjects = [c for c in candidates if _targets(action, c)]
            if not subjects:
                entry["effect"].append("no candidate adapter matches")
        for candidate in subjects:
            local = {
                **scope,
                "adapter_type": candidate.adapter_type if candidate else None,
                "adapter_similarity": _similarity(embedding, candidate.centroid) if candidate else None,
            }
            try:
                value = evaluate(tree, local, functions=functions)
            except EvaluationError as exc:
                entry["fired"] = "error"
                entry["error"] = str(exc)
                break
            if value is not True:
                continue
            entry["fired"] = True
            if candidate is None:
                entry["effect"].append(f"deactivated {len(weights)} adapter(s)")
                weights.clear()
            elif action["type"].startswith("activate"):
                weight = action.get("weight", 1.0)
                if weight == "similarity":
                    weight = _similarity(embedding, candidate.centroid)
                    if weight is None:
                        entry["effect"].append(f"{candidate.name}: no centroid to compare with")
                        continue
                weights[candidate.adapter_id] = float(weight)
                entry["effect"].append(f"{candidate.name} at {float(weight):.3f}")
            elif action["type"] == "scale_adapter_weight" and candidate.adapter_id in weights:
                weights[candidate.adapter_id] *= float(action["scale"])
                entry["effect"].append(f"{candidate.name} scaled by {action['scale']}")
            elif action["type"] == "deactivate_adapter" and candidate.adapter_id in weights:
                del weights[candidate.adapter_id]
                entry["effect"].append(f"{candidate.name} deactivated")

    drops = {"id": "limits", "when": "", "action": "clamp, normalise, floor, top", "fired": True, "effect": []}
    weights = {key: min(1.0, max(0.0, value)) for key, value in weights.items()}
    total = sum(weights.values())
    if total > 1:
        weights = {key: value / total for key, value in weights.items()}
        drops["effect"].append(f"normalised from a sum of {total:.3f}")
    floor = float(policy.get("weight_floor", 0.0))
    for key, value in list(weights.items()):
        if value < floor or value == 0:
            del weights[key]
            drops["effect"].append(f"{by_id[key].name} dropped: {value:.3f} is under the floor {floor:.3f}")
    ranked = sorted(weights.items(), key=lambda item: -item[1])
    keep = int(policy.get("max_active_adapters", 3))
    for key, value in ranked[keep:]:
        drops["effect"].append(f"{by_id[key].name} dropped: only the {keep} heaviest are kept ({value:.3f})")
    if drops["effect"]:
        trace.append(drops)
    return Decision(weights=dict(ranked[:keep]), trace=trace)
