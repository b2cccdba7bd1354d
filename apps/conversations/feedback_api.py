"""/v1 preferences (liminallm-compatible) and memory: entry points over the training app's services."""

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts.ratelimit import rate_limit_hit
from apps.conversations import selectors as conversation_selectors
from apps.training import selectors, services
from apps.training.serializers import (
    MemoryInput,
    MemoryOutput,
    MemoryUpdateInput,
    PickInput,
    PreferenceCreated,
    PreferenceInput,
    PreferenceOutput,
)
from liminal.api import validated
from liminal.errors import NotFound


def _judged_message(request, data):
    """The actor's finished answer in the actor's conversation, else 404 (never another user's)."""
    message = conversation_selectors.message_get(actor=request.user, message_id=data["message_id"])
    if message.conversation_id != data["conversation_id"]:
        raise NotFound("Message not found in this conversation.")
    return message


class PreferenceListApi(APIView):
    routing = False

    def get(self, request):
        events = selectors.events_list(actor=request.user, kind=request.query_params.get("kind") or None)
        return Response({"items": PreferenceOutput(events[:500], many=True).data})

    @extend_schema(request=PreferenceInput)
    def post(self, request):
        rate_limit_hit(scope="preferences_user", key=str(request.user.id))
        data = validated(PreferenceInput, request)
        event = services.feedback_record(
            actor=request.user,
            message=_judged_message(request, data),
            feedback=data["feedback"],
            explicit_signal=data["explicit_signal"],
            score=data.get("score"),
            corrected_text=data["corrected_text"],
            context_text=data["context_text"],
            weight=data.get("weight"),
            notes=data["notes"],
            reasons=data["reasons"],
            routing_trace=data.get("routing_trace"),
            adapter_gates=data.get("adapter_gates"),
            routing=self.routing,
        )
        return Response(PreferenceCreated(event).data, status=status.HTTP_201_CREATED)


class RoutingFeedbackApi(PreferenceListApi):
    routing = True

    def get(self, request):
        return Response(
            {"items": PreferenceOutput(selectors.events_list(actor=request.user, kind="routing")[:500], many=True).data}
        )


class PreferencePickApi(APIView):
    """After regenerating: the answer kept and the sibling it was kept over."""

    @extend_schema(request=PickInput)
    def post(self, request):
        rate_limit_hit(scope="preferences_user", key=str(request.user.id))
        data = validated(PickInput, request)
        chosen = conversation_selectors.message_get(actor=request.user, message_id=data["chosen_message_id"])
        rejected = conversation_selectors.message_get(actor=request.user, message_id=data["rejected_message_id"])
        event = services.pick_record(actor=request.user, chosen=chosen, rejected=rejected)
        return Response(PreferenceCreated(event).data, status=status.HTTP_201_CREATED)


class PreferenceDetailApi(APIView):
    def get(self, request, event_id):
        return Response(PreferenceOutput(selectors.event_get(actor=request.user, event_id=event_id)).data)

    def delete(self, request, event_id):
        event = selectors.event_get(actor=request.user, event_id=event_id)
        services.event_forget(actor=request.user, event=event)
        return Response({"deleted": True, "id": str(event_id)})


class PreferenceInsightsApi(APIView):
    def get(self, request):
        return Response(selectors.insights(actor=request.user))


class MemoryListApi(APIView):
    def get(self, request):
        return Response({"items": MemoryOutput(selectors.memory_list(actor=request.user)[:1000], many=True).data})

    @extend_schema(request=MemoryInput)
    def post(self, request):
        rate_limit_hit(scope="memory_user", key=str(request.user.id))
        data = validated(MemoryInput, request)
        item = services.memory_remember(actor=request.user, text=data["text"], pinned=data["pinned"])
        return Response(MemoryOutput(item).data, status=status.HTTP_201_CREATED)


class MemoryDetailApi(APIView):
    def get(self, request, item_id):
        return Response(MemoryOutput(selectors.memory_get(actor=request.user, item_id=item_id)).data)

    @extend_schema(request=MemoryUpdateInput)
    def patch(self, request, item_id):
        item = selectors.memory_get(actor=request.user, item_id=item_id)
        data = validated(MemoryUpdateInput, request)
        item = services.memory_update(actor=request.user, item=item, text=data.get("text"), pinned=data.get("pinned"))
        return Response(MemoryOutput(item).data)

    def delete(self, request, item_id):
        item = selectors.memory_get(actor=request.user, item_id=item_id)
        services.memory_forget(actor=request.user, item=item)
        return Response({"deleted": True, "id": str(item_id)})
