from django.urls import path

from apps.training import api

urlpatterns = [
    path("clusters", api.ClusterListApi.as_view(), name="api-clusters"),
    path("clusters/<uuid:cluster_id>", api.ClusterDetailApi.as_view(), name="api-cluster"),
    path("skills", api.SkillListApi.as_view(), name="api-skills"),
    path(
        "skills/proposals/<uuid:proposal_id>/approve",
        api.SkillProposalApproveApi.as_view(),
        name="api-skill-proposal-approve",
    ),
    path(
        "skills/proposals/<uuid:proposal_id>/dismiss",
        api.SkillProposalDismissApi.as_view(),
        name="api-skill-proposal-dismiss",
    ),
]
