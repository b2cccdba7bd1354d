"""WebSocket consumers for chat.

ChatConsumer (/ws/chat/) serves the HTMX UI: it receives form frames from htmx's ws extension
and answers with HTML fragments swapped out-of-band; streamed tokens are HTML-escaped.
ApiChatConsumer (/v1/chat/stream) is the JSON protocol for integrations (liminallm-compatible).
"""

import json
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from django.template.loader import render_to_string
from django.utils.html import escape

from apps.accounts.consumers import CLOSE_UNAUTHENTICATED, user_events_group
from apps.conversations import orchestrator, selectors
from apps.conversations.serializers import ChatInput
from apps.conversations.views import message_context, sidebar_item_html


def _error_text(exc) -> str:
    return orchestrator.error_payload(exc)[1]["message"]


class GenerationRelayMixin:
    """Subscribes to answers' streams (keyed by the server-issued answer id) and remembers them."""

    async def follow(self, turn_id, message_id=None) -> None:
        self.following[str(turn_id)] = str(message_id or turn_id)
        await orchestrator.subscribe(self.channel_layer, self.channel_name, turn_id)

    async def follow_new(self, start):
        """Subscribe to a new answer's stream *before* `start(turn_id)` queues the work, so no
        token is missed; `start` returns what to send back, which is returned."""
        turn_id = orchestrator.new_turn_id()
        await orchestrator.subscribe(self.channel_layer, self.channel_name, turn_id)
        try:
            payload = await start(turn_id)
        except Exception:
            await orchestrator.unsubscribe(self.channel_layer, self.channel_name, turn_id)
            raise
        self.following[str(turn_id)] = str(turn_id)
        return payload

    async def unfollow(self, turn_id) -> None:
        self.following.pop(str(turn_id), None)
        await orchestrator.unsubscribe(self.channel_layer, self.channel_name, turn_id)

    async def unfollow_all(self):
        for turn_id in list(self.following):
            await self.unfollow(turn_id)


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
        return list(conversation.messages.filter(status__in=["queued", "streaming"]).values_list("pk", flat=True))

    async def _resume_pending(self):
        """After a reload mid-answer, keep streaming into the page."""
        query = parse_qs(self.scope.get("query_string", b"").decode())
        for conversation_id in query.get("conversation", [])[:1]:
            for message_id in await self._pending_in_conversation(conversation_id):
                await self.follow(message_id)

    async def receive(self, text_data=None, bytes_data=None):
        try:
            frame = json.loads(text_data or "")
            if not isinstance(frame, dict):
                raise ValueError
        except (ValueError, RecursionError):
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
        except Exception as exc:
            await self.send_notice(_error_text(exc))

    async def send_notice(self, text: str):
        html = render_to_string("conversations/_notice.html", {"text": text})
        await self.send(text_data=html)

    # ---- actions

    async def _start_streaming(self, start) -> None:
        """`start(turn_id)` starts the answer and returns the html to send."""
        await self.send(text_data=await self.follow_new(start))

    async def on_send(self, frame):
        await self._start_streaming(lambda turn_id: self._start_turn(frame, turn_id))

    @database_sync_to_async
    def _start_turn(self, frame, turn_id):
        is_new = not frame.get("conversation_id")
        turn = orchestrator.start_chat(
            actor=self.user,
            content=frame.get("content", ""),
            conversation_id=frame.get("conversation_id") or None,
            workflow_id=frame.get("workflow_id") or None,
            turn_id=turn_id,
        )
        parts = [
            render_to_string(
                "conversations/_append.html",
                {
                    "messages": [
                        message_context(turn.user_message, self.user),
                        message_context(turn.assistant, self.user),
                    ],
                    "conversation": turn.conversation,
                },
            )
        ]
        if is_new:
            parts.append(sidebar_item_html(turn.conversation, prepend_oob=True, active=True))
        return "".join(parts)

    async def on_stop(self, frame):
        await self._cancel(frame.get("message_id"))

    @database_sync_to_async
    def _cancel(self, message_id):
        orchestrator.cancel(actor=self.user, message_id=message_id)

    async def on_regenerate(self, frame):
        await self._start_streaming(lambda turn_id: self._regenerate(frame.get("message_id"), turn_id))

    @database_sync_to_async
    def _regenerate(self, message_id, turn_id):
        turn = orchestrator.start_regenerate(actor=self.user, message_id=message_id, turn_id=turn_id)
        return self._messages_html(turn.conversation)

    async def on_edit(self, frame):
        await self._start_streaming(
            lambda turn_id: self._edit(frame.get("message_id"), frame.get("content", ""), turn_id)
        )

    @database_sync_to_async
    def _edit(self, message_id, content, turn_id):
        turn = orchestrator.start_edit(actor=self.user, message_id=message_id, content=content, turn_id=turn_id)
        return self._messages_html(turn.conversation)

    def _messages_html(self, conversation) -> str:
        from apps.conversations.views import messages_context

        conversation.refresh_from_db()
        return render_to_string(
            "conversations/_messages.html",
            {"entries": messages_context(conversation, self.user), "conversation": conversation, "oob": True},
        )

    # ---- channel-layer events

    async def gen_token(self, event):
        message_id = self.following.get(event["stream_key"])
        if message_id:
            await self.send(
                text_data=f'<span id="stream-{message_id}" hx-swap-oob="beforeend">{escape(event["text"])}</span>'
            )

    async def gen_trace(self, event):
        """Workflow steps are shown in the answer's receipt once it is done, not while streaming."""

    async def gen_done(self, event):
        if event["stream_key"] in self.following:
            await self.unfollow(event["stream_key"])
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
    """JSON chat over a WebSocket. First frame {access_token, message, conversation_id?,
    context_id?, workflow_id?, request_id?}; then frames {event: token|trace|message_done|error|
    cancel_ack, data, request_id}. A bad first frame gets an error frame naming the field and
    the socket stays open for a corrected one; {"action": "cancel"} stops the answer."""

    async def connect(self):
        self.user = None
        self.following = {}
        self.request_id = None
        self.turn = None
        self.done_sent = False
        await self.accept()

    async def disconnect(self, code):
        await self.unfollow_all()

    async def send_frame(self, event: str, data):
        await self.send(text_data=json.dumps({"event": event, "data": data, "request_id": self.request_id}))

    async def send_error(self, exc=None, *, code=None, message=None, details=None, close: bool = False):
        if exc is not None:
            _, payload = orchestrator.error_payload(exc)
        else:
            payload = {"code": code, "message": message, "details": details}
        await self.send_frame("error", payload)
        if close:
            await self.close()

    async def receive(self, text_data=None, bytes_data=None):
        try:
            frame = json.loads(text_data or bytes_data or b"")
            if not isinstance(frame, dict):
                raise ValueError
        except (ValueError, RecursionError):
            await self.send_error(code="validation_error", message="Frames must be JSON objects.")
            return
        if self.turn is None:
            await self.start(frame)
        elif frame.get("action") == "cancel":
            await self.cancel()
        else:
            await self.send_error(
                code="validation_error", message='Only {"action": "cancel"} is accepted once a message is sent.'
            )

    async def start(self, frame):
        try:
            user = self.user or await self._authenticate(frame.get("access_token"))
        except Exception as exc:  # the database is down: an `unavailable` frame, not a crash
            await self.send_error(exc)
            return
        if user is None:
            await self.send_error(
                code="unauthorized", message="A valid access_token is required in the first frame.", close=True
            )
            return
        self.user = user
        message = frame.get("message")
        body = {
            "message": message if isinstance(message, dict) else {"content": message},
            **{k: frame[k] for k in ("conversation_id", "context_id", "workflow_id", "request_id") if k in frame},
        }
        serializer = ChatInput(data=body)
        try:
            serializer.is_valid(raise_exception=True)
            data = serializer.validated_data
            self.turn = await self.follow_new(lambda turn_id: self._start_turn(data, turn_id))
        except Exception as exc:
            await self.send_error(exc)
            return
        self.request_id = self.turn.request_id

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
    def _start_turn(self, data, turn_id):
        return orchestrator.start_chat(
            actor=self.user,
            content=data["message"]["content"],
            conversation_id=data.get("conversation_id"),
            context_id=data.get("context_id"),
            workflow_id=data.get("workflow_id"),
            request_id=data.get("request_id"),
            turn_id=turn_id,
        )

    async def cancel(self):
        _, cancelled = await database_sync_to_async(orchestrator.cancel)(
            actor=self.user, message_id=self.turn.message_id
        )
        await self.send_frame("cancel_ack", {"message_id": self.turn.message_id, "cancelled": cancelled})

    async def gen_token(self, event):
        if self.turn is not None and event.get("stream_key") == self.turn.message_id:
            await self.send_frame("token", event["text"])

    async def gen_trace(self, event):
        if self.turn is not None and event.get("stream_key") == self.turn.message_id:
            for entry in event["entries"]:
                await self.send_frame("trace", entry)

    async def gen_done(self, event):
        if self.done_sent or self.turn is None or event["message_id"] != self.turn.message_id:
            return
        self.done_sent = True
        await self.unfollow(self.turn.message_id)
        payload = await database_sync_to_async(orchestrator.result)(actor=self.user, message_id=self.turn.message_id)
        await self.send_frame("message_done", payload)
        await self.close()
