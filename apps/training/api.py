"""/v1 topics and skills: the clusters found in signals, skill proposals and skill adapters."""

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.training import selectors, skills
from apps.training.models import SemanticCluster, SkillProposal
from liminal.api import validated
from liminal.errors import Invalid

SCOPES = ("mine", "global", "all")


def _skill_of(cluster: SemanticCluster, adapters: dict) -> dict | None:
    adapter = adapters.get(str(cluster.pk))
    if adapter is None:
        return None
    return {"adapter_id": str(adapter.pk), "name": adapter.name, "current_version": adapter.body.get("current_version")}


def cluster_output(actor, cluster: SemanticCluster, *, adapters: dict, with_samples: bool = False) -> dict:
    """A cluster as the actor may see it: a global cluster names no user and, outside an admin's
    view, carries only the actor's own signals as samples."""
    data = {
        "id": str(cluster.pk),
        "scope": "global" if cluster.is_global else "user",
        "status": cluster.status,
        "label": cluster.label,
        "description": cluster.description,
        "size": cluster.size,
        "positive_ratio": round(cluster.positive_ratio, 4),
        "cohesion": round(cluster.cohesion, 4),
        "merged_into": str(cluster.merged_into_id) if cluster.merged_into_id else None,
        "skill": _skill_of(cluster, adapters),
        "proposal": None,
        "created_at": cluster.created_at,
        "updated_at": cluster.updated_at,
    }
    proposal = getattr(cluster, "proposal", None) if not cluster.is_global else None
    if proposal is not None and (actor.is_staff or proposal.owner_id == actor.pk):
        data["proposal"] = {"id": str(proposal.pk), "status": proposal.status}
    if actor.is_staff and not cluster.is_global:
        data["owner_id"] = cluster.owner_id
    if with_samples:
        data["samples"] = selectors.cluster_samples(actor=actor, cluster=cluster)
    return data


def proposal_output(proposal: SkillProposal) -> dict:
    return {
        "id": str(proposal.pk),
        "cluster_id": str(proposal.cluster_id),
        "status": proposal.status,
        "evidence": proposal.evidence,
        "adapter_id": str(proposal.adapter_id) if proposal.adapter_id else None,
        "job_id": str(proposal.job_id) if proposal.job_id else None,
        "reason": proposal.reason,
        "decided_at": proposal.decided_at,
        "created_at": proposal.created_at,
    }


def skill_output(adapter) -> dict:
    return {
        "id": str(adapter.pk),
        "name": adapter.name,
        "description": adapter.description,
        "scope": "global" if adapter.owner_id is None else "user",
        "cluster_id": adapter.body.get("cluster_id"),
        "applicability": adapter.body.get("applicability", ""),
        "current_version": adapter.body.get("current_version"),
        "created_at": adapter.created_at,
    }


def _scope(request) -> str:
    scope = request.query_params.get("scope", "mine")
    if scope not in SCOPES:
        raise Invalid(f"Must be one of {', '.join(SCOPES)}.", field="scope")
    return scope


class ClusterListApi(APIView):
    @extend_schema(
        parameters=[OpenApiParameter("scope", str, enum=list(SCOPES), description="all: every user's (admins)")]
    )
    def get(self, request):
        """Your topics (`mine`), everyone's (`global`), or every user's (`all`, admins)."""
        scope = _scope(request)
        adapters = selectors.skill_adapters_by_cluster(actor=request.user)
        clusters = selectors.clusters_list(actor=request.user, scope=scope).select_related("proposal")
        return Response({"items": [cluster_output(request.user, c, adapters=adapters) for c in clusters]})


class ClusterDetailApi(APIView):
    def get(self, request, cluster_id):
        cluster = selectors.cluster_get(actor=request.user, cluster_id=cluster_id)
        adapters = selectors.skill_adapters_by_cluster(actor=request.user)
        return Response(cluster_output(request.user, cluster, adapters=adapters, with_samples=True))


class SkillListApi(APIView):
    def get(self, request):
        """Your skill adapters and the global ones, and your skill proposals (an admin adds
        everyone's with `?scope=all`)."""
        everyone = _scope(request) == "all"
        return Response(
            {
                "items": [skill_output(a) for a in selectors.skill_adapters(actor=request.user, everyone=everyone)],
                "proposals": [
                    proposal_output(p) for p in selectors.skill_proposals(actor=request.user, everyone=everyone)
                ],
            }
        )


class DecisionInput(serializers.Serializer):
    reason = serializers.CharField(required=False, allow_blank=True, max_length=2000)


class SkillProposalApproveApi(APIView):
    @extend_schema(request=DecisionInput)
    def post(self, request, proposal_id):
        """Admins: create the skill adapter and queue its first training job."""
        proposal = selectors.skill_proposal_get(actor=request.user, proposal_id=proposal_id)
        data = validated(DecisionInput, request)
        proposal = skills.skill_proposal_approve(actor=request.user, proposal=proposal, reason=data.get("reason", ""))
        return Response(proposal_output(proposal))


class SkillProposalDismissApi(APIView):
    @extend_schema(request=DecisionInput)
    def post(self, request, proposal_id):
        """The owner or an admin turns the proposal down; the topic is not proposed again."""
        proposal = selectors.skill_proposal_get(actor=request.user, proposal_id=proposal_id)
        data = validated(DecisionInput, request)
        proposal = skills.skill_proposal_dismiss(actor=request.user, proposal=proposal, reason=data.get("reason", ""))
        return Response(proposal_output(proposal))
