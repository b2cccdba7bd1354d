"""The /v1/config API (the seed system's contract): propose, list, show, decide, apply, roll back
config patches, and ask the architect for one. Admins only (403 for anyone else; a patch on an
artifact the caller cannot see is 404); writes are rate-limited per user."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts.ratelimit import rate_limit_hit
from apps.artifacts import selectors as artifact_selectors
from apps.configops import selectors, services
from apps.configops.serializers import (
    AutoPatchInput,
    ConfigPatchOutput,
    PatchApplyInput,
    PatchDecideInput,
    PatchListInput,
    PatchProposeInput,
    PatchRollbackInput,
)
from liminal.api import validated

RATE_SCOPE = "configops_user"


def _write_allowed(request) -> None:
    """Admins only, then the per-user budget, before the input is even read."""
    selectors.ensure_admin(request.user)
    rate_limit_hit(scope=RATE_SCOPE, key=str(request.user.id))


def _out(request, patch) -> dict:
    return ConfigPatchOutput(selectors.patch_get(actor=request.user, patch_id=patch.pk)).data


def _propose(request) -> Response:
    _write_allowed(request)
    data = validated(PatchProposeInput, request)
    patch = services.patch_propose(
        actor=request.user, artifact_id=data["artifact_id"], ops=data["patch"], justification=data["justification"]
    )
    return Response(_out(request, patch), status=status.HTTP_201_CREATED)


class PatchListApi(APIView):
    @extend_schema(
        operation_id="config_patches_list",
        parameters=[
            OpenApiParameter("status", str, enum=["pending", "approved", "rejected", "applied", "failed"]),
            OpenApiParameter("artifact_id", OpenApiTypes.UUID),
        ],
        responses=inline_serializer("ConfigPatchList", {"items": ConfigPatchOutput(many=True)}),
    )
    def get(self, request):
        selectors.ensure_admin(request.user)
        query = validated_query(PatchListInput, request)
        artifact = None
        if query["artifact_id"]:
            artifact = artifact_selectors.artifact_get(actor=request.user, artifact_id=query["artifact_id"])
        patches = selectors.patch_list(actor=request.user, status=query["status"] or None, artifact=artifact)
        return Response({"items": ConfigPatchOutput(patches[:500], many=True).data})

    @extend_schema(request=PatchProposeInput, responses={201: ConfigPatchOutput})
    def post(self, request):
        return _propose(request)


class ProposePatchApi(APIView):
    @extend_schema(request=PatchProposeInput, responses={201: ConfigPatchOutput})
    def post(self, request):
        return _propose(request)


class PatchDetailApi(APIView):
    @extend_schema(operation_id="config_patch_retrieve", responses=ConfigPatchOutput)
    def get(self, request, patch_id):
        return Response(ConfigPatchOutput(selectors.patch_get(actor=request.user, patch_id=patch_id)).data)


class PatchDecideApi(APIView):
    @extend_schema(request=PatchDecideInput, responses=ConfigPatchOutput)
    def post(self, request, patch_id):
        patch = selectors.patch_get(actor=request.user, patch_id=patch_id)
        _write_allowed(request)
        data = validated(PatchDecideInput, request)
        patch = services.patch_decide(actor=request.user, patch=patch, decision=data["decision"], reason=data["reason"])
        return Response(_out(request, patch))


def _apply(request, patch_id) -> Response:
    patch = selectors.patch_get(actor=request.user, patch_id=patch_id)
    _write_allowed(request)
    return Response(_out(request, services.patch_apply(actor=request.user, patch=patch)))


class PatchApplyApi(APIView):
    @extend_schema(request=None, responses=ConfigPatchOutput)
    def post(self, request, patch_id):
        return _apply(request, patch_id)


class ApplyApi(APIView):
    @extend_schema(request=PatchApplyInput, responses=ConfigPatchOutput)
    def post(self, request):
        selectors.ensure_admin(request.user)
        return _apply(request, validated(PatchApplyInput, request)["patch_id"])


class PatchRollbackApi(APIView):
    @extend_schema(request=PatchRollbackInput, responses=ConfigPatchOutput)
    def post(self, request, patch_id):
        patch = selectors.patch_get(actor=request.user, patch_id=patch_id)
        _write_allowed(request)
        data = validated(PatchRollbackInput, request)
        return Response(
            _out(request, services.patch_rollback(actor=request.user, patch=patch, version=data["version"]))
        )


class AutoPatchApi(APIView):
    @extend_schema(request=AutoPatchInput, responses={202: OpenApiTypes.OBJECT})
    def post(self, request):
        _write_allowed(request)
        data = validated(AutoPatchInput, request)
        queued = services.architect_request(actor=request.user, artifact_id=data["artifact_id"], goal=data["goal"])
        return Response(queued, status=status.HTTP_202_ACCEPTED)


def validated_query(serializer_class, request) -> dict:
    serializer = serializer_class(data=request.query_params)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data
