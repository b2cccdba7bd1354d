from rest_framework import serializers

from apps.training.models import MemoryItem, PreferenceEvent
from apps.training.services import REASONS

FEEDBACK = [choice for choice, _ in PreferenceEvent.Feedback.choices]
SIGNALS = ["like", "dislike", "always", "never", "thumbs_up", "thumbs_down", "routing_feedback", "correction", "edit"]


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise serializers.ValidationError("Must not contain NUL characters.")
    return value


class PreferenceInput(serializers.Serializer):
    conversation_id = serializers.UUIDField()
    message_id = serializers.UUIDField()
    feedback = serializers.ChoiceField(choices=FEEDBACK)
    explicit_signal = serializers.ChoiceField(choices=SIGNALS, required=False, allow_blank=True, default="")
    score = serializers.FloatField(min_value=-1.0, max_value=1.0, required=False, allow_null=True)
    corrected_text = serializers.CharField(required=False, allow_blank=True, max_length=32000, default="")
    context_text = serializers.CharField(required=False, allow_blank=True, max_length=32000, default="")
    weight = serializers.FloatField(min_value=0.0, max_value=1.0, required=False, allow_null=True)
    notes = serializers.CharField(required=False, allow_blank=True, max_length=2000, default="")
    reasons = serializers.ListField(child=serializers.ChoiceField(choices=REASONS), required=False, default=list)
    routing_trace = serializers.ListField(
        child=serializers.DictField(), required=False, allow_null=True, max_length=200
    )
    adapter_gates = serializers.ListField(
        child=serializers.DictField(), required=False, allow_null=True, max_length=200
    )

    def validate_corrected_text(self, value):
        return _no_nul(value)

    def validate_context_text(self, value):
        return _no_nul(value)

    def validate_notes(self, value):
        return _no_nul(value)


class PickInput(serializers.Serializer):
    chosen_message_id = serializers.UUIDField()
    rejected_message_id = serializers.UUIDField()


class PreferenceCreated(serializers.ModelSerializer):
    cluster_id = serializers.SerializerMethodField()

    class Meta:
        model = PreferenceEvent
        fields = ["id", "cluster_id", "feedback", "kind", "created_at"]

    def get_cluster_id(self, event) -> str | None:
        return event.cluster_id or None


class PreferenceOutput(PreferenceCreated):
    class Meta(PreferenceCreated.Meta):
        fields = [
            "id",
            "cluster_id",
            "kind",
            "feedback",
            "explicit_signal",
            "score",
            "weight",
            "reasons",
            "notes",
            "prompt",
            "answer",
            "correction",
            "conversation_id",
            "message_id",
            "rejected_message_id",
            "receipt",
            "created_at",
        ]


class MemoryInput(serializers.Serializer):
    text = serializers.CharField(max_length=2000, trim_whitespace=True)
    pinned = serializers.BooleanField(required=False, default=False)

    def validate_text(self, value):
        return _no_nul(value)


class MemoryUpdateInput(serializers.Serializer):
    text = serializers.CharField(max_length=2000, required=False)
    pinned = serializers.BooleanField(required=False)

    def validate_text(self, value):
        return _no_nul(value)

    def validate(self, data):
        if not data:
            raise serializers.ValidationError({"text": ["Send text and/or pinned."]})
        return data


class MemoryOutput(serializers.ModelSerializer):
    source_message_id = serializers.UUIDField(allow_null=True)

    class Meta:
        model = MemoryItem
        fields = ["id", "text", "pinned", "source_message_id", "created_at", "updated_at"]
