"""/v1 conversations API (DRF): list/create, read/rename/delete, messages, cancel."""

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.conversations import orchestrator, selectors, services
from apps.conversations.serializers import (
    CancelInput,
    ConversationInput,
    ConversationOutput,
    MessageOutput,
    ToolInvokeInput,
)
from liminal.api import validated


class ConversationListApi(APIView):
    def get(self, request):
        conversations = selectors.conversation_list(actor=request.user, query=request.query_params.get("q", ""))
        return Response({"items": ConversationOutput(conversations[:500], many=True).data})

    @extend_schema(request=ConversationInput)
    def post(self, request):
        data = validated(ConversationInput, request)
        conversation = services.conversation_create(actor=request.user, title=data["title"])
        return Response(ConversationOutput(conversation).data, status=status.HTTP_201_CREATED)


class ConversationDetailApi(APIView):
    def get(self, request, conversation_id):
        conversation = selectors.conversation_get(actor=request.user, conversation_id=conversation_id)
        return Response(ConversationOutput(conversation).data)

    @extend_schema(request=ConversationInput)
    def patch(self, request, conversation_id):
        conversation = selectors.conversation_get(actor=request.user, conversation_id=conversation_id)
        data = validated(ConversationInput, request)
        services.conversation_rename(actor=request.user, conversation=conversation, title=data["title"])
        return Response(ConversationOutput(conversation).data)

    def delete(self, request, conversation_id):
        conversation = selectors.conversation_get(actor=request.user, conversation_id=conversation_id)
        services.conversation_delete(actor=request.user, conversation=conversation)
        return Response({"deleted": True, "conversation_id": str(conversation_id)})


class ConversationMessagesApi(APIView):
    def get(self, request, conversation_id):
        conversation = selectors.conversation_get(actor=request.user, conversation_id=conversation_id)
        scope = request.query_params.get("scope", "path")
        if scope == "all":
            messages = conversation.messages.order_by("created_at")
        else:
            messages = [entry.message for entry in selectors.conversation_path(conversation=conversation)]
        return Response(
            {"items": MessageOutput(messages, many=True).data, "scope": "all" if scope == "all" else "path"}
        )


class ChatCancelApi(APIView):
    @extend_schema(request=CancelInput)
    def post(self, request):
        data = validated(CancelInput, request)
        message, cancelled = orchestrator.cancel(actor=request.user, request_id=data["request_id"])
        return Response({"request_id": data["request_id"], "cancelled": cancelled, "message_id": str(message.pk)})


class ToolInvokeApi(APIView):
    """POST /v1/tools/{id}/invoke {inputs, conversation_id?, context_id?}: one tool call."""

    @extend_schema(request=ToolInvokeInput)
    def post(self, request, tool_id):
        data = validated(ToolInvokeInput, request)
        return Response(
            orchestrator.invoke_tool(
                actor=request.user,
                tool_id=tool_id,
                inputs=data["inputs"],
                conversation_id=data.get("conversation_id"),
                context_id=data.get("context_id"),
            )
        )
