from rest_framework import serializers

from apps.conversations.grounding import context_snippets
from apps.conversations.models import Conversation, Message


class ConversationOutput(serializers.ModelSerializer):
    conversation_id = serializers.UUIDField(source="id", read_only=True)
    workflow_id = serializers.UUIDField(read_only=True)

    class Meta:
        model = Conversation
        fields = ["id", "conversation_id", "title", "created_at", "updated_at", "current_leaf_id", "workflow_id"]


class MessageOutput(serializers.ModelSerializer):
    message_id = serializers.UUIDField(source="id", read_only=True)

    class Meta:
        model = Message
        fields = [
            "id",
            "message_id",
            "parent_id",
            "role",
            "content",
            "status",
            "error",
            "request_id",
            "receipt",
            "created_at",
        ]


class ConversationInput(serializers.Serializer):
    title = serializers.CharField(max_length=200, allow_blank=True, required=False, default="")


class ChatMessageInput(serializers.Serializer):
    content = serializers.CharField(allow_blank=True, trim_whitespace=False)
    mode = serializers.ChoiceField(choices=["text"], default="text", required=False)


class ChatInput(serializers.Serializer):
    conversation_id = serializers.UUIDField(required=False, allow_null=True)
    context_id = serializers.UUIDField(required=False, allow_null=True)
    workflow_id = serializers.UUIDField(required=False, allow_null=True)
    message = ChatMessageInput()
    stream = serializers.BooleanField(default=False, required=False)
    request_id = serializers.RegexField(r"^[A-Za-z0-9._-]{1,64}$", required=False)


class ToolInvokeInput(serializers.Serializer):
    inputs = serializers.DictField(required=False, default=dict)
    conversation_id = serializers.UUIDField(required=False, allow_null=True)
    context_id = serializers.UUIDField(required=False, allow_null=True)


class CancelInput(serializers.Serializer):
    request_id = serializers.RegexField(r"^[A-Za-z0-9._-]{1,64}$")


def usage_of(message: Message) -> dict:
    receipt = message.receipt or {}
    prompt, completion = receipt.get("prompt_tokens") or 0, receipt.get("completion_tokens") or 0
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def content_struct(message: Message) -> dict | None:
    """The answer as structure: its text and, when grounded, the passages it cites by number."""
    retrieval = (message.receipt or {}).get("retrieval") or {}
    if not message.content and not retrieval:
        return None
    return {
        "type": "answer",
        "text": message.content,
        "grounded": bool(retrieval),
        "citations": [
            {k: chunk.get(k) for k in ("index", "chunk_id", "file_id", "file_name", "citation")}
            for chunk in retrieval.get("chunks") or []
        ],
    }


def chat_result(message: Message) -> dict:
    receipt = message.receipt or {}
    workflow = receipt.get("workflow") or {}
    return {
        "message_id": str(message.pk),
        "conversation_id": str(message.conversation_id),
        "content": message.content,
        "status": message.status,
        "finish_reason": receipt.get("finish_reason"),
        "error": message.error or None,
        "adapters": receipt.get("adapters", []),
        "usage": usage_of(message),
        "receipt": receipt,
        "context_snippets": context_snippets(message),
        "request_id": message.request_id,
        "workflow_id": workflow.get("id"),
        "workflow_version": workflow.get("version"),
        "workflow_trace": receipt.get("workflow_trace", []),
        "routing_trace": receipt.get("routing_trace", []),
        "adapter_gates": receipt.get("adapter_gates", []),
        "content_struct": content_struct(message),
    }
