"""Async API views that wait on a generation: POST /v1/chat and the OpenAI-compatible API.

They are async because waiting for tokens in a sync view would hold one of the few threads
Django's ASGI handler runs sync code on. They authenticate and parse; the orchestrator starts
the turn, streams it (subscribed before the work is queued, so no token is missed), stops it
when the client goes away, and shapes the result.
"""

import json
import time

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions, serializers

from apps.accounts.authentication import user_for_bearer
from apps.accounts.tokens import InvalidToken
from apps.conversations import orchestrator
from apps.conversations.serializers import ChatInput
from liminal.api import error_response, exception_response
from liminal.errors import Unavailable


async def _authenticate(request):
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise exceptions.NotAuthenticated("Authentication credentials were not provided.")
    try:
        user, _ = await sync_to_async(user_for_bearer)(token.strip())
    except InvalidToken as exc:
        raise exceptions.AuthenticationFailed(str(exc)) from exc
    return user


def _json_body(request) -> dict:
    try:
        body = json.loads(request.body or b"")
    except ValueError as exc:
        raise exceptions.ValidationError({"body": ["Request body must be JSON."]}) from exc
    if not isinstance(body, dict):
        raise exceptions.ValidationError({"body": ["Request body must be a JSON object."]})
    return body


def _sse(event: str | None, data) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data)
    prefix = f"event: {event}\n" if event else ""
    return f"{prefix}data: {payload}\n\n".encode()


# ---------------------------------------------------------------- POST /v1/chat


async def _authenticated_input(request, serializer_class):
    """(user, validated body) of a POST, or (None, the error response in the envelope)."""
    if request.method != "POST":
        return None, error_response(405, "method_not_allowed", "Method not allowed.", request=request)
    try:
        user = await _authenticate(request)
        serializer = serializer_class(data=_json_body(request))
        serializer.is_valid(raise_exception=True)
    except Exception as exc:
        return None, exception_response(exc, request)
    return user, serializer.validated_data


@csrf_exempt
async def chat(request):
    user, data = await _authenticated_input(request, ChatInput)
    if user is None:
        return data

    turn_id = orchestrator.new_turn_id()
    stream = orchestrator.TurnStream(turn_id)
    try:
        await stream.__aenter__()
        turn = await sync_to_async(orchestrator.start_chat)(
            actor=user,
            content=data["message"]["content"],
            conversation_id=data.get("conversation_id"),
            context_id=data.get("context_id"),
            workflow_id=data.get("workflow_id"),
            request_id=data.get("request_id"),
            turn_id=turn_id,
        )
    except Exception as exc:
        await stream.__aexit__(None, None, None)
        return exception_response(exc, request)
    stream.mark_started()

    if data.get("stream"):
        return StreamingHttpResponse(
            _chat_stream(stream, user, turn),
            content_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "X-Request-ID": turn.request_id},
        )
    try:
        async for event in stream.events():
            if event["event"] == "error":
                return exception_response(Unavailable(event["message"]), request)
    finally:
        await stream.__aexit__(None, None, None)
    try:
        payload = await sync_to_async(orchestrator.result)(actor=user, message_id=turn.message_id)
    except Exception as exc:
        return exception_response(exc, request)
    return JsonResponse({"status": "ok", "data": payload, "request_id": turn.request_id})


async def _chat_stream(stream, user, turn):
    request_id = turn.request_id
    try:
        yield _sse(
            "start", {"message_id": turn.message_id, "conversation_id": turn.conversation_id, "request_id": request_id}
        )
        async for event in stream.events():
            if event["event"] == "token":
                yield _sse("token", {"text": event["text"], "request_id": request_id})
            elif event["event"] == "trace":
                yield _sse("trace", {**event["entry"], "request_id": request_id})
            elif event["event"] == "error":
                yield _sse("error", {"code": event["code"], "message": event["message"], "request_id": request_id})
            else:
                yield _sse(
                    "message_done", await sync_to_async(orchestrator.result)(actor=user, message_id=turn.message_id)
                )
    finally:
        await stream.__aexit__(None, None, None)


# ---------------------------------------------------------------- OpenAI-compatible API


def served_models() -> list[str]:
    return [settings.SERVED_MODEL_ID]


@csrf_exempt
async def models(request):
    if request.method != "GET":
        return error_response(405, "method_not_allowed", "Method not allowed.", request=request)
    try:
        await _authenticate(request)
    except Exception as exc:
        return exception_response(exc, request)
    created = int(time.time())
    return JsonResponse(
        {
            "object": "list",
            "data": [{"id": m, "object": "model", "created": created, "owned_by": "liminal"} for m in served_models()],
        }
    )


class OpenAIMessage(serializers.Serializer):
    role = serializers.ChoiceField(choices=["system", "user", "assistant", "developer"])
    content = serializers.JSONField()

    def validate_content(self, value):
        if isinstance(value, str):
            return value
        if isinstance(value, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in value):
            return "".join(str(p.get("text", "")) for p in value)
        raise serializers.ValidationError("content must be a string or a list of text parts.")


class CompletionInput(serializers.Serializer):
    model = serializers.CharField(max_length=200)
    messages = OpenAIMessage(many=True, allow_empty=False)
    temperature = serializers.FloatField(min_value=0.0, max_value=2.0, required=False)
    top_p = serializers.FloatField(min_value=0.0001, max_value=1.0, required=False)
    max_tokens = serializers.IntegerField(min_value=1, required=False)
    max_completion_tokens = serializers.IntegerField(min_value=1, required=False)
    stop = serializers.JSONField(required=False)
    seed = serializers.IntegerField(required=False)
    stream = serializers.BooleanField(default=False)
    n = serializers.IntegerField(min_value=1, max_value=1, required=False)
    frequency_penalty = serializers.FloatField(required=False)
    presence_penalty = serializers.FloatField(required=False)
    user = serializers.CharField(required=False)
    stream_options = serializers.JSONField(required=False)
    # Liminal's extensions: ground the answer in one of your contexts, or pick a workflow.
    context_id = serializers.UUIDField(required=False, allow_null=True)
    workflow_id = serializers.UUIDField(required=False, allow_null=True)

    def validate_model(self, value):
        if value not in served_models():
            raise serializers.ValidationError(f"Unknown model {value!r}; GET /v1/models lists the served models.")
        return value

    def validate_stop(self, value):
        if value is None:
            return []
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or len(value) > 4 or not all(isinstance(s, str) for s in value):
            raise serializers.ValidationError("stop must be a string or a list of at most 4 strings.")
        return value

    def validate_messages(self, value):
        total = sum(len(m["content"]) for m in value)
        if total > settings.CHAT_MAX_MESSAGE_CHARS * 4:
            raise serializers.ValidationError("The messages are too long.")
        return value


def _completion_params(data) -> dict:
    """Only what the client asked for: the workflow's defaults fill in the rest."""
    params = {}
    max_tokens = data.get("max_completion_tokens") or data.get("max_tokens")
    if max_tokens:
        params["max_tokens"] = min(max_tokens, settings.ENGINE_MAX_SEQ_LEN)
    if "temperature" in data:
        params["temperature"] = data["temperature"]
        params["greedy"] = data["temperature"] == 0
    for name in ("top_p", "seed"):
        if data.get(name) is not None:
            params[name] = data[name]
    if data.get("stop"):
        params["stop"] = data["stop"]
    return params


@csrf_exempt
async def chat_completions(request):
    user, data = await _authenticated_input(request, CompletionInput)
    if user is None:
        return data

    messages = [
        {"role": "system" if m["role"] == "developer" else m["role"], "content": m["content"]} for m in data["messages"]
    ]
    turn_id = orchestrator.new_turn_id()
    completion_id = f"chatcmpl-{turn_id.hex}"
    stream = orchestrator.TurnStream(turn_id)
    try:
        await stream.__aenter__()
        await sync_to_async(orchestrator.start_completion)(
            actor=user,
            messages=messages,
            generation_params=_completion_params(data),
            context_id=data.get("context_id"),
            workflow_id=data.get("workflow_id"),
            turn_id=turn_id,
        )
    except Exception as exc:
        await stream.__aexit__(None, None, None)
        return exception_response(exc, request)
    stream.mark_started()

    model = data["model"]
    created = int(time.time())
    if data["stream"]:
        include_usage = bool((data.get("stream_options") or {}).get("include_usage"))
        return StreamingHttpResponse(
            _completion_stream(stream, user, turn_id, completion_id, model, created, include_usage),
            content_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    try:
        async for event in stream.events():
            if event["event"] == "error":
                return exception_response(Unavailable(event["message"]), request)
    finally:
        await stream.__aexit__(None, None, None)
    try:
        answer = await sync_to_async(orchestrator.result)(actor=user, message_id=str(turn_id))
    except Exception as exc:
        return exception_response(exc, request)
    if answer["status"] == "failed":
        return error_response(500, "server_error", answer["error"] or "Generation failed.", request=request)
    return JsonResponse(
        {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": answer["content"]},
                    "finish_reason": _openai_finish(answer["finish_reason"]),
                    "logprobs": None,
                }
            ],
            "usage": answer["usage"],
            "liminal": _liminal_extension(answer),
        }
    )


def _liminal_extension(answer: dict) -> dict:
    """Where the answer came from, beside the OpenAI fields (clients ignore unknown keys)."""
    return {k: answer[k] for k in ("message_id", "conversation_id", "workflow_id", "workflow_trace", "receipt")}


def _openai_finish(reason: str | None) -> str:
    return {"stop": "stop", "length": "length", "cancelled": "stop"}.get(reason or "", "stop")


async def _completion_stream(stream, user, turn_id, completion_id, model, created, include_usage):
    def chunk(delta: dict, finish_reason=None, usage=None) -> bytes:
        body = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}],
        }
        if usage is not None:
            body["usage"] = usage
        return _sse(None, body)

    try:
        yield chunk({"role": "assistant", "content": ""})
        async for event in stream.events():
            if event["event"] == "token":
                yield chunk({"content": event["text"]})
            elif event["event"] == "error":
                yield _sse(None, {"error": {"message": event["message"], "code": event["code"]}})
            elif event["event"] == "done":
                answer = await sync_to_async(orchestrator.result)(actor=user, message_id=str(turn_id))
                if answer["status"] == "failed":
                    yield _sse(
                        None, {"error": {"message": answer["error"] or "Generation failed.", "code": "server_error"}}
                    )
                else:
                    yield chunk({}, finish_reason=_openai_finish(answer["finish_reason"]))
                    if include_usage:
                        yield _sse(
                            None,
                            {
                                "id": completion_id,
                                "object": "chat.completion.chunk",
                                "created": created,
                                "model": model,
                                "choices": [],
                                "usage": answer["usage"],
                            },
                        )
        yield b"data: [DONE]\n\n"
    finally:
        await stream.__aexit__(None, None, None)
