from rest_framework import serializers

from apps.artifacts.models import Artifact, ArtifactVersion
from apps.artifacts.services import version_path
from apps.artifacts.validation import check_storable

# Deeper bodies are refused before they reach the validator or the database, both of which recurse.


class ArtifactOutput(serializers.ModelSerializer):
    owner_user_id = serializers.UUIDField(source="owner_id", allow_null=True)
    version = serializers.IntegerField(source="version_number")
    schema = serializers.JSONField(source="body")

    class Meta:
        model = Artifact
        fields = [
            "id",
            "type",
            "kind",
            "name",
            "description",
            "owner_user_id",
            "visibility",
            "version",
            "created_at",
            "updated_at",
            "schema",
        ]


class VersionOutput(serializers.ModelSerializer):
    artifact_id = serializers.UUIDField()
    schema = serializers.JSONField(source="body")
    author_user_id = serializers.UUIDField(source="author_id", allow_null=True)
    parent_version = serializers.SerializerMethodField()
    fs_path = serializers.SerializerMethodField()

    class Meta:
        model = ArtifactVersion
        fields = [
            "id",
            "artifact_id",
            "version",
            "created_by",
            "change_note",
            "created_at",
            "schema",
            "author_user_id",
            "parent_version",
            "fs_path",
        ]

    def get_parent_version(self, version) -> int | None:
        return version.parent.version if version.parent_id else None

    def get_fs_path(self, version) -> str:
        return str(version_path(version.artifact_id, version.version))


class PageInput(serializers.Serializer):
    page = serializers.IntegerField(min_value=1, default=1)
    page_size = serializers.IntegerField(min_value=1, max_value=500, default=100)
    q = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    visibility = serializers.CharField(max_length=32, required=False, allow_blank=True, default="")


class ArtifactListInput(PageInput):
    type = serializers.CharField(max_length=64, required=False, allow_blank=True, default="")
    kind = serializers.CharField(max_length=64, required=False, allow_blank=True, default="")


class _BodyField(serializers.JSONField):
    def to_internal_value(self, data):
        check_storable(data, field=self.field_name)
        return super().to_internal_value(data)


class ArtifactCreateInput(serializers.Serializer):
    type = serializers.CharField(max_length=64, required=False, allow_null=True, default=None)
    name = serializers.CharField(max_length=200)
    description = serializers.CharField(max_length=4000, required=False, allow_blank=True, default="")
    schema = _BodyField()
    visibility = serializers.ChoiceField(
        choices=Artifact.Visibility.values, required=False, default=Artifact.Visibility.PRIVATE
    )


class ArtifactChangeInput(serializers.Serializer):
    """One of three changes: RFC 6902 operations, a new body and/or description, or a revert."""

    patch = serializers.ListField(child=serializers.DictField(), required=False, allow_empty=False, max_length=1000)
    schema = _BodyField(required=False)
    description = serializers.CharField(max_length=4000, required=False, allow_blank=True)
    revert_to = serializers.IntegerField(min_value=1, required=False)
    change_note = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")

    def validate_patch(self, patch):
        check_storable(patch, field="patch")
        return patch

    def validate(self, data):
        modes = [mode for mode in ("patch", "revert_to") if mode in data]
        if "schema" in data or "description" in data:
            modes.append("schema")
        if not modes:
            raise serializers.ValidationError("Send one of patch, schema or description, or revert_to.")
        if len(modes) > 1:
            raise serializers.ValidationError("patch, schema/description and revert_to cannot be combined.")
        return data
