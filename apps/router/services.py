"""Routing a message: which adapters answer it, and with what weight, decided by the routing
policy that applies to the user (data, editable without a restart) and recorded as a trace."""

from collections.abc import Callable

from apps.router import selectors
from apps.training import selectors as training_selectors
from apps.training import skills as training_skills
from workers.policy.routing import Candidate, decide, needs_cluster, needs_embedding

# No safety classifier runs yet: every message is "low" until one does.
DEFAULT_SAFETY_RISK = "low"


def routing_decide(
    *,
    actor,
    message: str,
    has_context: bool,
    embed: Callable[[str], list[float]],
    intent: str | None = None,
    policy_body: dict | None = None,
) -> dict:
    """{adapters: [{name, adapter_id, version, fs_dir, weight}] for the engine, trace, adapter_gates,
    policy: {id, version}}. The message is embedded (MiniLM) only when a rule needs it.
    `policy_body` decides with that body in place of the policy's current one (ConfigOps' dry runs)."""
    policy, candidates = selectors.routing_inputs(actor=actor)
    if policy is None or policy.current_version is None:
        return {"adapters": [], "trace": [], "adapter_gates": [], "policy": None}
    body = policy.current_version.body if policy_body is None else policy_body
    wants_cluster = needs_cluster(body)
    embedding = embed(message) if (candidates or wants_cluster) and needs_embedding(body) else None
    cluster = None
    if wants_cluster and embedding is not None:
        join = training_skills.thresholds().join_similarity
        cluster = training_selectors.nearest_cluster(actor=actor, embedding=embedding, min_similarity=join)
    scope = {
        "ctx_embedding": embedding,
        "ctx_cluster": str(cluster.pk) if cluster is not None else None,
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
        functions={"cluster_label_contains": _label_contains(actor)},
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
        "cluster": str(cluster.pk) if cluster is not None else None,
    }


def _label_contains(actor):
    """cluster_label_contains(cluster_id, text): whether that cluster's label (one the actor's
    routing may read) contains the text, case-insensitively; labels are read once, if asked."""
    labels = None

    def contains(cluster_id, text):
        nonlocal labels
        if cluster_id is None:
            return False
        if not isinstance(cluster_id, str) or not isinstance(text, str):
            raise TypeError("cluster_label_contains takes a cluster id and a text")
        if labels is None:
            labels = training_selectors.cluster_labels(actor=actor)
        return text.casefold() in labels.get(cluster_id, "").casefold()

    return contains
