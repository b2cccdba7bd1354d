"""Routing a message: which adapters answer it, and with what weight, decided by the routing
policy that applies to the user (data, editable without a restart) and recorded as a trace."""

from collections.abc import Callable

from apps.router import selectors
from workers.policy.routing import Candidate, decide, needs_embedding

# No safety classifier runs yet: every message is "low" until one does.
DEFAULT_SAFETY_RISK = "low"


def routing_decide(
    *, actor, message: str, has_context: bool, embed: Callable[[str], list[float]], intent: str | None = None
) -> dict:
    """{adapters: [{name, adapter_id, version, fs_dir, weight}] for the engine, trace, adapter_gates,
    policy: {id, version}}. The message is embedded (MiniLM) only when a rule needs it."""
    policy = selectors.routing_policy(actor=actor)
    candidates = selectors.routing_candidates(actor=actor)
    if policy is None or policy.current_version is None:
        return {"adapters": [], "trace": [], "adapter_gates": [], "policy": None}
    body = policy.current_version.body
    scope = {
        "ctx_embedding": embed(message) if candidates and needs_embedding(body) else None,
        "ctx_cluster": None,
        "safety_risk": DEFAULT_SAFETY_RISK,
        "intent": intent,
        "has_context": has_context,
        "user": {"plan": getattr(actor, "plan_tier", None)},
    }
    by_id = {c["adapter_id"]: c for c in candidates}
    decision = decide(
        body,
        [
            Candidate(
                adapter_id=c["adapter_id"],
                name=c["name"],
                adapter_type=c["adapter_type"],
                version=c["version"],
                cluster_id=c.get("cluster_id"),
                centroid=tuple(c["centroid"]) if c.get("centroid") else None,
            )
            for c in candidates
        ],
        scope,
    )
    chosen = [{**by_id[adapter_id], "weight": round(weight, 4)} for adapter_id, weight in decision.weights.items()]
    return {
        "adapters": [{k: c[k] for k in ("name", "adapter_id", "version", "fs_dir", "weight")} for c in chosen],
        "trace": decision.trace,
        "adapter_gates": [
            {"adapter_id": c["adapter_id"], "name": c["name"], "version": c["version"], "weight": c["weight"]}
            for c in chosen
        ],
        "policy": {"id": str(policy.pk), "version": policy.current_version.version},
    }
