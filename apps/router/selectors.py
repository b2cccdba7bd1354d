"""Reads for routing: the policy that applies to a user, and the adapters it may choose from.

Every chat answer routes before its first token, so `routing_inputs` reads both in two queries
(the artifacts, then their promoted versions) instead of one per policy, adapter and skill."""

from django.db.models import Q

from apps.artifacts.models import Artifact
from apps.training import selectors as training_selectors

USER_POLICY_NAME = "routing"
GLOBAL_POLICY_NAME = "routing.default"


def _routing_artifacts(actor) -> list[Artifact]:
    """The actor's own and the global routing policies and LoRA adapters, oldest first."""
    return list(
        Artifact.objects.filter(Q(owner__isnull=True) | Q(owner=actor), kind__in=("policy.routing", "adapter.lora"))
        .select_related("current_version", "router_state")
        .order_by("created_at", "id")
    )


def _policy(actor, artifacts: list[Artifact]) -> Artifact | None:
    """The actor's own `policy.routing` named "routing", else the global default."""
    policies = [a for a in artifacts if a.kind == "policy.routing"]
    own = next((a for a in policies if a.owner_id == actor.pk and a.name == USER_POLICY_NAME), None)
    return own or next((a for a in policies if a.owner_id is None and a.name == GLOBAL_POLICY_NAME), None)


def _candidates(actor, artifacts: list[Artifact]) -> list[dict]:
    """Adapters the router may turn on for this actor: their promoted persona adapter, their own
    skill adapters and every global skill adapter with a promoted version (never another
    user's adapter)."""
    persona = next(
        (
            a
            for a in artifacts
            if a.kind == "adapter.lora" and a.owner_id == actor.pk and a.name == training_selectors.PERSONA_ADAPTER_NAME
        ),
        None,
    )
    skills = [a for a in artifacts if a.kind == "adapter.lora" and a.body.get("scope") == "skill"]
    promoted = training_selectors.promoted_versions(adapters=([persona] if persona is not None else []) + skills)
    candidates = []
    if persona is not None and persona.pk in promoted:
        persona_entry = training_selectors.persona_serving(actor=actor, version=promoted[persona.pk])
        candidates.append(dict(persona_entry, adapter_type="persona"))
    for skill in skills:
        version = promoted.get(skill.pk)
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


def routing_inputs(*, actor) -> tuple[Artifact | None, list[dict]]:
    """(the policy that applies to the actor, the adapters it may choose from)."""
    artifacts = _routing_artifacts(actor)
    return _policy(actor, artifacts), _candidates(actor, artifacts)


def routing_policy(*, actor) -> Artifact | None:
    return _policy(actor, _routing_artifacts(actor))


def routing_candidates(*, actor) -> list[dict]:
    return _candidates(actor, _routing_artifacts(actor))


def _centroid(adapter) -> list[float] | None:
    state = getattr(adapter, "router_state", None)
    return list(state.centroid) if state is not None and state.centroid is not None else None
