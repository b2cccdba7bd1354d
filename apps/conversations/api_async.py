"""Async API views that wait on a generation: POST /v1/chat and the OpenAI-compatible API.

They are async because waiting for tokens in a sync view would hold one of the few threads
Django's ASGI handler runs sync code on. Each request subscribes its own channel to the
generation's group *before* the work is queued, so no token is missed.
"""

import asyncio
import json
import time
import uuid

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.http import JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions, serializers

from apps.accounts.authentication import user_for_bearer
from apps.accounts.tokens import InvalidToken
from apps.conversations import selectors, services, state
from apps.conversations.serializers import ChatInput, chat_result
from apps.conversations.streaming import generation_group
from liminal.api import error_response, exception_response


class GenerationSubscription:
    """Receives one generation's events on a private channel."""

    def __init__(self, request_id: str):
        self.request_id = request_id
        self.layer = get_channel_layer()
        self.channel = None

    async def __aenter__(self):
        self.channel = await self.layer.new_channel()
        await self.layer.group_add(generation_group(self.request_id), self.channel)
        return self

    async def __aexit__(self, *exc):
        await self.layer.group_discard(generation_group(self.request_id), self.channel)

    async def events(self, timeout: float):
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            event = await asyncio.wait_for(self.layer.receive(self.channel), remaining)
            if event.get("request_id") != self.request_id:
                continue
            yield event
            if event["type"] == "gen.done":
                return


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


def _cancel_on_disconnect(request_id: str):
    return sync_to_async(state.cancel_request)(request_id)


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

    request_id = data.get("request_id") or uuid.uuid4().hex
    subscription = GenerationSubscription(request_id)
    await subscription.__aenter__()
    try:
        conversation_id, message_id = await sync_to_async(_start_turn)(
            user, data["message"]["content"], data.get("conversation_id"), request_id, data.get("context_id")
        )
    except Exception as exc:
        await subscription.__aexit__(None, None, None)
        return exception_response(exc, request)

    if data.get("stream"):
        return StreamingHttpResponse(
            _chat_stream(subscription, user, message_id, conversation_id, request_id),
            content_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "X-Request-ID": request_id},
        )
    try:
        async for _ in subscription.events(settings.CHAT_API_TIMEOUT):
            pass
    except TimeoutError:
        await _cancel_on_disconnect(request_id)
        return error_response(503, "unavailable", "The answer took too long; it was stopped.", request=request)
    finally:
        await subscription.__aexit__(None, None, None)
    return JsonResponse({"status": "ok", "data": await _result(user, message_id), "request_id": request_id})


@sync_to_async
def _result(user, message_id) -> dict:
    return chat_result(selectors.message_get(actor=user, message_id=message_id))


def _start_turn(user, content, conversation_id, request_id, context_id=None):
    conversation, _, assistant = services.chat_turn_start(
        actor=user, content=content, conversation_id=conversation_id, request_id=request_id, context_id=context_id
    )
    return str(conversation.pk), str(assistant.pk)


async def _chat_stream(subscription, user, message_id, conversation_id, request_id):
    finished = False
    try:
        yield _sse("start", {"message_id": message_id, "conversation_id": conversation_id, "request_id": request_id})
        async for event in subscription.events(settings.CHAT_API_TIMEOUT):
            if event["type"] == "gen.token":
                yield _sse("token", {"text": event["text"], "request_id": request_id})
        finished = True
        yield _sse("message_done", await _result(user, message_id))
    except TimeoutError:
        yield _sse("error", {"code": "unavailable", "message": "The answer took too long; it was stopped."})
    finally:
        await subscription.__aexit__(None, None, None)
        if not finished:
            # The client went away (or we timed out): stop spending compute on this answer.
            await _cancel_on_disconnect(request_id)


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
    max_tokens = data.get("max_completion_tokens") or data.get("max_tokens") or settings.CHAT_MAX_TOKENS
    return {
        "temperature": data.get("temperature", 1.0),
        "top_p": data.get("top_p", 1.0),
        "max_tokens": min(max_tokens, settings.ENGINE_MAX_SEQ_LEN),
        "stop": data.get("stop") or [],
        "seed": data.get("seed"),
    }


@csrf_exempt
async def chat_completions(request):
    user, data = await _authenticated_input(request, CompletionInput)
    if user is None:
        return data

    request_id = uuid.uuid4().hex
    completion_id = f"chatcmpl-{request_id}"
    messages = [
        {"role": "system" if m["role"] == "developer" else m["role"], "content": m["content"]} for m in data["messages"]
    ]
    subscription = GenerationSubscription(request_id)
    await subscription.__aenter__()
    try:
        await sync_to_async(_queue_completion)(user, request_id, messages, _completion_params(data))
    except Exception as exc:
        await subscription.__aexit__(None, None, None)
        return exception_response(exc, request)

    model = data["model"]
    created = int(time.time())
    if data["stream"]:
        include_usage = bool((data.get("stream_options") or {}).get("include_usage"))
        return StreamingHttpResponse(
            _completion_stream(subscription, request_id, completion_id, model, created, include_usage),
            content_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    text, done = "", None
    try:
        async for event in subscription.events(settings.CHAT_API_TIMEOUT):
            if event["type"] == "gen.token":
                text += event["text"]
            else:
                done = event
    except TimeoutError:
        await _cancel_on_disconnect(request_id)
        return error_response(503, "unavailable", "The completion took too long; it was stopped.", request=request)
    finally:
        await subscription.__aexit__(None, None, None)
    if done.get("status") == "failed":
        return error_response(500, "server_error", done.get("error") or "Generation failed.", request=request)
    return JsonResponse(
        {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": done.get("text", text)},
                    "finish_reason": _openai_finish(done.get("finish_reason")),
                    "logprobs": None,
                }
            ],
            "usage": done.get("usage") or {},
        }
    )


def _openai_finish(reason: str | None) -> str:
    return {"stop": "stop", "length": "length", "cancelled": "stop"}.get(reason or "", "stop")


def _queue_completion(user, request_id, messages, params):
    from apps.conversations.tasks import generate_completion

    state.generation_slot_acquire(user_id=user.id, request_id=request_id)
    try:
        generate_completion.delay(request_id, str(user.id), messages, params)
    except Exception:
        state.generation_slot_release(user_id=user.id, request_id=request_id)
        raise


async def _completion_stream(subscription, request_id, completion_id, model, created, include_usage):
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

    finished = False
    try:
        yield chunk({"role": "assistant", "content": ""})
        async for event in subscription.events(settings.CHAT_API_TIMEOUT):
            if event["type"] == "gen.token":
                yield chunk({"content": event["text"]})
            else:
                finished = True
                if event.get("status") == "failed":
                    yield _sse(
                        None, {"error": {"message": event.get("error") or "Generation failed.", "code": "server_error"}}
                    )
                else:
                    yield chunk({}, finish_reason=_openai_finish(event.get("finish_reason")))
                    if include_usage:
                        yield _sse(
                            None,
                            {
                                "id": completion_id,
                                "object": "chat.completion.chunk",
                                "created": created,
                                "model": model,
                                "choices": [],
                                "usage": event.get("usage") or {},
                            },
                        )
        yield b"data: [DONE]\n\n"
    except TimeoutError:
        yield _sse(None, {"error": {"message": "The completion took too long; it was stopped.", "code": "unavailable"}})
    finally:
        await subscription.__aexit__(None, None, None)
        if not finished:
            await _cancel_on_disconnect(request_id)
