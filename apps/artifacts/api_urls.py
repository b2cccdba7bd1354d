from django.urls import path

from apps.artifacts import api

urlpatterns = [
    path("artifacts", api.ArtifactListApi.as_view(), name="api-artifacts"),
    path("artifacts/<uuid:artifact_id>", api.ArtifactDetailApi.as_view(), name="api-artifact-detail"),
    path("artifacts/<uuid:artifact_id>/versions", api.ArtifactVersionsApi.as_view(), name="api-artifact-versions"),
    path("tools/specs", api.ToolSpecListApi.as_view(), name="api-tool-specs"),
    path("tools/specs/<uuid:artifact_id>", api.ToolSpecDetailApi.as_view(), name="api-tool-spec-detail"),
    path("workflows", api.WorkflowListApi.as_view(), name="api-workflows"),
]
