"""Reads for routing: the policy that applies to a user, and the adapters it may choose from."""

from django.db.models import Q

from apps.artifacts.models import Artifact
from apps.artifacts.selectors import global_artifact
from apps.training import selectors as training_selectors

USER_POLICY_NAME = "routing"
GLOBAL_POLICY_NAME = "routing.default"


def routing_policy(*, actor) -> Artifact | None:
    """The actor's own `policy.routing` named "routing", else the global default."""
    own = (
        Artifact.objects.filter(owner=actor, kind="policy.routing", name=USER_POLICY_NAME)
        .select_related("current_version")
        .first()
    )
    return own or global_artifact(kind="policy.routing", name=GLOBAL_POLICY_NAME)


def routing_candidates(*, actor) -> list[dict]:
    """Adapters the router may turn on for this actor: their promoted persona adapter, their own
    skill adapters and every global skill adapter with a promoted version (never another
    user's adapter)."""
    candidates = [dict(adapter, adapter_type="persona") for adapter in training_selectors.serving_adapters(actor=actor)]
    skills = (
        Artifact.objects.filter(Q(owner__isnull=True) | Q(owner=actor), kind="adapter.lora")
        .filter(current_version__body__scope="skill")
        .select_related("router_state")
        .order_by("created_at")
    )
    for skill in skills:
        version = training_selectors.promoted_version(adapter=skill)
        if version is not None:
            candidates.append(
                {
                    "name": f"skill-{skill.pk}",
                    "adapter_id": str(skill.pk),
                    "version": version.version,
                    "fs_dir": version.fs_dir,
                    "weight": 0.0,
                    "adapter_type": "skill",
                    "cluster_id": skill.body.get("cluster_id"),
                    "centroid": _centroid(skill),
                }
            )
    return candidates


def _centroid(adapter) -> list[float] | None:
    state = getattr(adapter, "router_state", None)
    return list(state.centroid) if state is not None and state.centroid is not None else None
