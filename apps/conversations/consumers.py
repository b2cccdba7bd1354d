"""WebSocket consumers for chat.

ChatConsumer (/ws/chat/) serves the HTMX UI: it receives form frames from htmx's ws extension
and answers with HTML fragments swapped out-of-band; streamed tokens are HTML-escaped.
ApiChatConsumer (/v1/chat/stream) is the JSON protocol for integrations (liminallm-compatible).
"""

import json
import uuid
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from django.template.loader import render_to_string
from django.utils.html import escape
from rest_framework.exceptions import APIException, ValidationError

from apps.accounts.consumers import CLOSE_UNAUTHENTICATED, user_events_group
from apps.conversations import selectors, services
from apps.conversations.streaming import generation_group
from apps.conversations.views import message_context, sidebar_item_html
from liminal.api import error_code_of

_REQUEST_ID_OK = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


def _error_text(exc) -> str:
    if isinstance(exc, ValidationError):
        detail = exc.detail
        if isinstance(detail, dict):
            detail = next(iter(detail.values()))
        if isinstance(detail, list):
            detail = detail[0]
        return str(detail)
    if isinstance(exc, APIException):
        return str(exc.detail)
    if isinstance(exc, Http404):
        return "Not found."
    return "Something went wrong."


class GenerationRelayMixin:
    """Subscribes to generation groups and remembers which message each request is for."""

    async def follow(self, request_id: str, message_id) -> None:
        self.following[request_id] = str(message_id)
        await self.channel_layer.group_add(generation_group(request_id), self.channel_name)

    async def follow_new(self, request_id: str, start):
        """Subscribe to the request's group *before* `start(request_id)` queues the work, so no
        token is missed. `start` returns (payload, id of the answer); the payload is returned."""
        await self.channel_layer.group_add(generation_group(request_id), self.channel_name)
        try:
            payload, message_id = await start(request_id)
        except Exception:
            await self.channel_layer.group_discard(generation_group(request_id), self.channel_name)
            raise
        self.following[request_id] = str(message_id)
        return payload

    async def unfollow(self, request_id: str) -> None:
        self.following.pop(request_id, None)
        await self.channel_layer.group_discard(generation_group(request_id), self.channel_name)

    async def unfollow_all(self):
        for request_id in list(self.following):
            await self.unfollow(request_id)


class ChatConsumer(GenerationRelayMixin, AsyncWebsocketConsumer):
    async def connect(self):
        self.user = self.scope.get("user")
        self.following: dict[str, str] = {}
        if self.user is None or not self.user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        await self.accept()
        await self.channel_layer.group_add(user_events_group(self.user.id), self.channel_name)
        await self._resume_pending()

    async def disconnect(self, code):
        if getattr(self, "user", None) is not None and self.user.is_authenticated:
            await self.channel_layer.group_discard(user_events_group(self.user.id), self.channel_name)
            await self.unfollow_all()

    @database_sync_to_async
    def _pending_in_conversation(self, conversation_id):
        try:
            conversation = selectors.conversation_get(actor=self.user, conversation_id=conversation_id)
        except (Http404, DjangoValidationError):  # not the user's, or not a conversation id at all
            return []
        return list(conversation.messages.filter(status__in=["queued", "streaming"]).values_list("request_id", "pk"))

    async def _resume_pending(self):
        """After a reload mid-answer, keep streaming into the page."""
        query = parse_qs(self.scope.get("query_string", b"").decode())
        for conversation_id in query.get("conversation", [])[:1]:
            for request_id, message_id in await self._pending_in_conversation(conversation_id):
                await self.follow(request_id, message_id)

    async def receive(self, text_data=None, bytes_data=None):
        try:
            frame = json.loads(text_data or "")
            if not isinstance(frame, dict):
                raise ValueError
        except ValueError:
            await self.send_notice("That request was not understood.")
            return
        action = frame.get("action") or "send"
        handler = {
            "send": self.on_send,
            "stop": self.on_stop,
            "regenerate": self.on_regenerate,
            "edit": self.on_edit,
        }.get(action)
        if handler is None:
            await self.send_notice("Unknown action.")
            return
        try:
            await handler(frame)
        except (APIException, Http404, ValidationError) as exc:
            await self.send_notice(_error_text(exc))

    async def send_notice(self, text: str):
        html = render_to_string("conversations/_notice.html", {"text": text})
        await self.send(text_data=html)

    # ---- actions

    async def _start_streaming(self, start) -> None:
        """`start(request_id)` returns (html to send, id of the answer being generated)."""
        await self.send(text_data=await self.follow_new(uuid.uuid4().hex, start))

    async def on_send(self, frame):
        await self._start_streaming(lambda request_id: self._start_turn(frame, request_id))

    @database_sync_to_async
    def _start_turn(self, frame, request_id):
        is_new = not frame.get("conversation_id")
        conversation, user_message, assistant = services.chat_turn_start(
            actor=self.user,
            content=frame.get("content", ""),
            conversation_id=frame.get("conversation_id"),
            request_id=request_id,
        )
        parts = [
            render_to_string(
                "conversations/_append.html",
                {
                    "messages": [
                        message_context(user_message, self.user),
                        message_context(assistant, self.user),
                    ],
                    "conversation": conversation,
                },
            )
        ]
        if is_new:
            parts.append(sidebar_item_html(conversation, prepend_oob=True, active=True))
        return "".join(parts), str(assistant.pk)

    async def on_stop(self, frame):
        await self._cancel(frame.get("message_id"))

    @database_sync_to_async
    def _cancel(self, message_id):
        message = selectors.message_get(actor=self.user, message_id=message_id)
        services.generation_cancel(actor=self.user, message=message)

    async def on_regenerate(self, frame):
        await self._start_streaming(lambda request_id: self._regenerate(frame.get("message_id"), request_id))

    @database_sync_to_async
    def _regenerate(self, message_id, request_id):
        message = selectors.message_get(actor=self.user, message_id=message_id)
        assistant = services.chat_regenerate(actor=self.user, message=message, request_id=request_id)
        return self._messages_html(assistant.conversation), str(assistant.pk)

    async def on_edit(self, frame):
        await self._start_streaming(
            lambda request_id: self._edit(frame.get("message_id"), frame.get("content", ""), request_id)
        )

    @database_sync_to_async
    def _edit(self, message_id, content, request_id):
        message = selectors.message_get(actor=self.user, message_id=message_id)
        _, assistant = services.chat_edit(actor=self.user, message=message, content=content, request_id=request_id)
        return self._messages_html(assistant.conversation), str(assistant.pk)

    def _messages_html(self, conversation) -> str:
        from apps.conversations.views import messages_context

        conversation.refresh_from_db()
        return render_to_string(
            "conversations/_messages.html",
            {"entries": messages_context(conversation, self.user), "conversation": conversation, "oob": True},
        )

    # ---- channel-layer events

    async def gen_token(self, event):
        message_id = self.following.get(event["request_id"])
        if message_id:
            await self.send(
                text_data=f'<span id="stream-{message_id}" hx-swap-oob="beforeend">{escape(event["text"])}</span>'
            )

    async def gen_done(self, event):
        if event["request_id"] in self.following:
            await self.unfollow(event["request_id"])
        html = await self._final_message_html(event["message_id"])
        if html:
            await self.send(text_data=html)

    @database_sync_to_async
    def _final_message_html(self, message_id):
        try:
            message = selectors.message_get(actor=self.user, message_id=message_id)
        except Http404:
            return None
        return render_to_string("conversations/_message.html", {**message_context(message, self.user), "oob": True})

    async def user_event(self, event):
        if event["event"] == "conversation.title":
            data = event["data"]
            html = render_to_string(
                "conversations/_title_update.html",
                {"conversation_id": data["conversation_id"], "title": data["title"]},
            )
            await self.send(text_data=html)


class ApiChatConsumer(GenerationRelayMixin, AsyncWebsocketConsumer):
    """JSON chat over a WebSocket: first frame {access_token, message, conversation_id?, request_id?}."""

    async def connect(self):
        self.user = None
        self.following = {}
        self.request_id = None
        self.message_id = None
        self.done_sent = False
        await self.accept()

    async def disconnect(self, code):
        await self.unfollow_all()

    async def send_frame(self, event: str, data):
        await self.send(text_data=json.dumps({"event": event, "data": data, "request_id": self.request_id}))

    async def send_error(self, code: str, message: str, close: bool = False):
        await self.send_frame("error", {"code": code, "message": message})
        if close:
            await self.close()

    async def receive(self, text_data=None, bytes_data=None):
        try:
            frame = json.loads(text_data or bytes_data or b"")
            if not isinstance(frame, dict):
                raise ValueError
        except ValueError:
            await self.send_error("validation_error", "Frames must be JSON objects.", close=self.user is None)
            return
        if self.user is None:
            await self.start(frame)
        elif frame.get("action") == "cancel":
            await self.cancel()
        else:
            await self.send_error("validation_error", 'Only {"action": "cancel"} is accepted once a message is sent.')

    async def start(self, frame):
        request_id = frame.get("request_id") or uuid.uuid4().hex
        if not isinstance(request_id, str) or not 0 < len(request_id) <= 64 or set(request_id) - _REQUEST_ID_OK:
            await self.send_error("validation_error", "request_id must be 1-64 letters, digits, '-', '_' or '.'.", True)
            return
        self.request_id = request_id
        user = await self._authenticate(frame.get("access_token"))
        if user is None:
            await self.send_error("unauthorized", "A valid access_token is required in the first frame.", close=True)
            return
        self.user = user
        message = frame.get("message")
        content = message.get("content") if isinstance(message, dict) else message
        try:
            self.conversation_id = await self.follow_new(
                request_id, lambda _: self._start_turn(content, frame.get("conversation_id"), frame.get("context_id"))
            )
        except (APIException, Http404, ValidationError, ValueError) as exc:
            await self.send_error(error_code_of(exc), _error_text(exc), close=True)
            return
        self.message_id = self.following[request_id]

    @database_sync_to_async
    def _authenticate(self, token):
        from apps.accounts.authentication import user_session_for_access_token
        from apps.accounts.tokens import InvalidToken

        if not isinstance(token, str):
            return None
        try:
            user, _ = user_session_for_access_token(token)
        except InvalidToken:
            return None
        return user

    @database_sync_to_async
    def _start_turn(self, content, conversation_id, context_id):
        conversation, _, assistant = services.chat_turn_start(
            actor=self.user,
            content=content,
            conversation_id=conversation_id,
            request_id=self.request_id,
            context_id=context_id,
        )
        return str(conversation.pk), str(assistant.pk)

    async def cancel(self):
        cancelled = await self._cancel()
        await self.send_frame("cancel_ack", {"message_id": self.message_id, "cancelled": cancelled})

    @database_sync_to_async
    def _cancel(self):
        message = selectors.message_get(actor=self.user, message_id=self.message_id)
        return services.generation_cancel(actor=self.user, message=message)

    async def gen_token(self, event):
        if event.get("request_id") == self.request_id:
            await self.send_frame("token", event["text"])

    async def gen_done(self, event):
        if self.done_sent or event["message_id"] != self.message_id:
            return
        self.done_sent = True
        await self.unfollow(self.request_id)
        payload = await self._done_payload()
        await self.send_frame("message_done", payload)
        await self.close()

    @database_sync_to_async
    def _done_payload(self):
        from apps.conversations.serializers import chat_result

        message = selectors.message_get(actor=self.user, message_id=self.message_id)
        return chat_result(message)
