"""The /v1 artifacts API (liminallm-compatible): artifacts, their versions, tools and workflows."""

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.artifacts import selectors, services
from apps.artifacts.models import Artifact
from apps.artifacts.serializers import (
    ArtifactChangeInput,
    ArtifactCreateInput,
    ArtifactListInput,
    ArtifactOutput,
    PageInput,
    VersionOutput,
)
from liminal.api import validated


def _valid(serializer_class, data) -> dict:
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def _page(artifacts, *, page: int, page_size: int) -> dict:
    total = artifacts.count()
    start = (page - 1) * page_size
    has_next = start + page_size < total
    return {
        "items": ArtifactOutput(artifacts[start : start + page_size], many=True).data,
        "total_count": total,
        "has_next": has_next,
        "next_page": page + 1 if has_next else None,
        "page_size": page_size,
    }


def _kind_page(request, kind: str) -> dict:
    query = _valid(PageInput, request.query_params)
    artifacts = selectors.artifact_list(actor=request.user, kind=kind, visibility=query["visibility"], query=query["q"])
    return _page(artifacts, page=query["page"], page_size=query["page_size"])


def _item(request, artifact_id, kind: str | None = None) -> dict:
    return ArtifactOutput(selectors.artifact_get(actor=request.user, artifact_id=artifact_id, kind=kind)).data


class ArtifactListApi(APIView):
    def get(self, request):
        query = _valid(ArtifactListInput, request.query_params)
        artifacts = selectors.artifact_list(
            actor=request.user,
            type=query["type"],
            kind=query["kind"],
            visibility=query["visibility"],
            query=query["q"],
        )
        return Response(_page(artifacts, page=query["page"], page_size=query["page_size"]))

    @extend_schema(request=ArtifactCreateInput)
    def post(self, request):
        data = validated(ArtifactCreateInput, request)
        artifact = services.artifact_create(
            actor=request.user,
            type=data["type"],
            name=data["name"],
            description=data["description"],
            body=data["schema"],
            visibility=data["visibility"],
        )
        return Response(_item(request, artifact.pk), status=status.HTTP_201_CREATED)


class ArtifactDetailApi(APIView):
    def get(self, request, artifact_id):
        return Response(_item(request, artifact_id))

    @extend_schema(request=ArtifactChangeInput)
    def patch(self, request, artifact_id):
        artifact = selectors.artifact_get(actor=request.user, artifact_id=artifact_id)
        data = validated(ArtifactChangeInput, request)
        if "revert_to" in data:
            services.artifact_revert(
                actor=request.user, artifact=artifact, version=data["revert_to"], change_note=data["change_note"]
            )
        elif "patch" in data:
            services.artifact_patch(
                actor=request.user, artifact=artifact, patch=data["patch"], change_note=data["change_note"]
            )
        else:
            services.artifact_update(
                actor=request.user,
                artifact=artifact,
                body=data.get("schema"),
                description=data.get("description"),
                change_note=data["change_note"],
            )
        return Response(_item(request, artifact_id))

    def delete(self, request, artifact_id):
        artifact = selectors.artifact_get(actor=request.user, artifact_id=artifact_id)
        services.artifact_delete(actor=request.user, artifact=artifact)
        return Response({"deleted": True, "id": str(artifact_id)})


class ArtifactVersionsApi(APIView):
    def get(self, request, artifact_id):
        artifact = selectors.artifact_get(actor=request.user, artifact_id=artifact_id)
        versions = selectors.artifact_versions(actor=request.user, artifact=artifact).select_related("parent")
        return Response({"items": VersionOutput(versions, many=True).data})


class ToolSpecListApi(APIView):
    def get(self, request):
        return Response(_kind_page(request, Artifact.Kind.TOOL_SPEC))


class ToolSpecDetailApi(APIView):
    def get(self, request, artifact_id):
        return Response(_item(request, artifact_id, kind=Artifact.Kind.TOOL_SPEC))


class WorkflowListApi(APIView):
    def get(self, request):
        return Response(_kind_page(request, Artifact.Kind.WORKFLOW_CHAT))
