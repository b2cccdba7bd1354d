from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from apps.artifacts.validation import check_storable
from apps.configops.models import ConfigPatch
from apps.configops.patches import JUSTIFICATION_MAX, MAX_OPS, OP_SCHEMA, normalise_ops

# For the OpenAPI description (3.0 has no if/then): an operation's shape, without its per-op rules.
_OPERATION = {k: v for k, v in OP_SCHEMA.items() if k != "allOf"}
_OPERATIONS = {"type": "array", "minItems": 1, "maxItems": MAX_OPS, "items": _OPERATION}


@extend_schema_field(
    {
        "oneOf": [_OPERATIONS, {"type": "object", "properties": {"ops": _OPERATIONS}, "required": ["ops"]}, _OPERATION],
        "description": 'RFC 6902 operations: a list, {"ops": [...]}, or one operation object (at most 100).',
    }
)
class PatchField(serializers.JSONField):
    """A patch in any of the accepted shapes, as a list of operations."""

    def to_internal_value(self, data):
        check_storable(data, field=self.field_name)
        return normalise_ops(super().to_internal_value(data))


class PatchProposeInput(serializers.Serializer):
    artifact_id = serializers.UUIDField()
    patch = PatchField()
    justification = serializers.CharField(min_length=1, max_length=JUSTIFICATION_MAX)


class PatchListInput(serializers.Serializer):
    status = serializers.ChoiceField(choices=ConfigPatch.Status.values, required=False, allow_blank=True, default="")
    artifact_id = serializers.UUIDField(required=False, allow_null=True, default=None)


class PatchDecideInput(serializers.Serializer):
    decision = serializers.ChoiceField(choices=["approve", "reject"])
    reason = serializers.CharField(max_length=JUSTIFICATION_MAX, required=False, allow_blank=True, default="")


class PatchApplyInput(serializers.Serializer):
    patch_id = serializers.UUIDField()


class PatchRollbackInput(serializers.Serializer):
    version = serializers.IntegerField(min_value=1, required=False, allow_null=True, default=None)


class AutoPatchInput(serializers.Serializer):
    artifact_id = serializers.UUIDField()
    goal = serializers.CharField(max_length=JUSTIFICATION_MAX, required=False, allow_blank=True, default="")


class ConfigPatchMetaOutput(serializers.Serializer):
    base_version = serializers.IntegerField()
    artifact_kind = serializers.CharField(source="artifact.kind")
    artifact_name = serializers.CharField(source="artifact.name")
    current_version = serializers.IntegerField(source="artifact.version_number")
    proposed_by = serializers.UUIDField(source="proposed_by_id", allow_null=True)
    dry_run = serializers.JSONField()
    failure_reason = serializers.CharField()
    model_output = serializers.CharField()
    decided_by = serializers.UUIDField(source="decided_by_id", allow_null=True)
    decision_reason = serializers.CharField()
    applied_by = serializers.UUIDField(source="applied_by_id", allow_null=True)
    applied_version = serializers.SerializerMethodField()
    rolled_back_at = serializers.DateTimeField(allow_null=True)
    rolled_back_by = serializers.UUIDField(source="rolled_back_by_id", allow_null=True)
    rollback_version = serializers.SerializerMethodField()

    def get_applied_version(self, patch) -> int | None:
        return patch.applied_version.version if patch.applied_version_id else None

    def get_rollback_version(self, patch) -> int | None:
        return patch.rollback_version.version if patch.rollback_version_id else None


class ConfigPatchOutput(serializers.ModelSerializer):
    artifact_id = serializers.UUIDField()
    patch = serializers.JSONField(source="ops")
    meta = ConfigPatchMetaOutput(source="*")

    class Meta:
        model = ConfigPatch
        fields = [
            "id",
            "artifact_id",
            "proposer",
            "justification",
            "status",
            "patch",
            "created_at",
            "decided_at",
            "applied_at",
            "meta",
        ]
