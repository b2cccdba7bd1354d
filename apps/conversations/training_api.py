"""/v1 adapters and training jobs: entry points over the training app's services."""

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.artifacts.models import Artifact
from apps.training import adapters as adapter_services
from apps.training import selectors as training_selectors
from apps.training.models import AdapterVersion, TrainingJob
from liminal.api import validated


class VersionOutput(serializers.ModelSerializer):
    parent_version = serializers.IntegerField(source="parent.version", allow_null=True, default=None)

    class Meta:
        model = AdapterVersion
        fields = [
            "id",
            "version",
            "parent_version",
            "status",
            "checksum",
            "dataset_hash",
            "evaluation",
            "loss_curve",
            "tainted_at",
            "created_at",
            "promoted_at",
        ]


class JobOutput(serializers.ModelSerializer):
    adapter_id = serializers.UUIDField()
    version = serializers.IntegerField(source="version.version", allow_null=True, default=None)

    class Meta:
        model = TrainingJob
        fields = [
            "id",
            "adapter_id",
            "status",
            "trigger",
            "examples",
            "steps_done",
            "steps_total",
            "loss_curve",
            "report",
            "error",
            "attempts",
            "version",
            "created_at",
            "started_at",
            "finished_at",
        ]


class RollbackInput(serializers.Serializer):
    to_version = serializers.IntegerField(min_value=1, required=False, allow_null=True)


def _adapter_output(adapter: Artifact, with_versions: bool) -> dict:
    versions = training_selectors.adapter_versions(adapter=adapter)
    data = {
        "id": str(adapter.pk),
        "name": adapter.name,
        "scope": adapter.body.get("scope"),
        "current_version": adapter.body.get("current_version"),
        "versions_count": versions.count(),
        "created_at": adapter.created_at,
        "updated_at": adapter.updated_at,
    }
    if with_versions:
        data["versions"] = VersionOutput(versions, many=True).data
        data["jobs"] = JobOutput(training_selectors.adapter_jobs(adapter=adapter), many=True).data
    return data


class AdapterListApi(APIView):
    def get(self, request):
        return Response(
            {"items": [_adapter_output(a, False) for a in training_selectors.adapters_list(actor=request.user)]}
        )


class AdapterDetailApi(APIView):
    def get(self, request, adapter_id):
        return Response(
            _adapter_output(training_selectors.adapter_get(actor=request.user, adapter_id=adapter_id), True)
        )


class AdapterRollbackApi(APIView):
    @extend_schema(request=RollbackInput)
    def post(self, request, adapter_id):
        adapter = training_selectors.adapter_get(actor=request.user, adapter_id=adapter_id)
        data = validated(RollbackInput, request)
        served = adapter_services.adapter_rollback(
            actor=request.user, adapter=adapter, to_version=data.get("to_version")
        )
        return Response({"id": str(adapter.pk), "current_version": served.version if served else None})


class TrainingJobListApi(APIView):
    def get(self, request):
        jobs = training_selectors.jobs_list(actor=request.user)
        return Response({"items": JobOutput(jobs, many=True).data})

    def post(self, request):
        """Train now: a job for your persona adapter on the `train` queue."""
        job = adapter_services.training_job_create(actor=request.user, trigger=TrainingJob.Trigger.MANUAL)
        return Response(JobOutput(job).data, status=status.HTTP_202_ACCEPTED)
