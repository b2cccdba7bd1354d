"""The chat orchestrator: the one place that starts a turn, follows its stream, stops it, maps
its errors and shapes its result, for every entry point (the UI socket, /v1/chat/stream,
POST /v1/chat, /v1/chat/completions). Entry points authenticate, parse and subscribe; then:

    turn_id = new_turn_id()                              # issued here, never by a client
    async with TurnStream(turn_id) as stream:            # subscribed before anything is queued
        turn = await sync_to_async(start_chat)(actor=..., content=..., turn_id=turn_id)
        async for event in stream.events():              # token / trace / done / error
            ...

The stream of an answer is keyed by its message id (`turn_id`), so knowing a client's
request id gives no access to anyone's stream; requests ids are labels unique per user.
"""

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction

from apps.conversations import selectors, services, state, tasks
from apps.conversations.models import Conversation, Message
from apps.conversations.serializers import chat_result
from apps.conversations.streaming import generation_group
from liminal.api import OUTAGES, error_parts
from liminal.errors import Invalid, NotFound, Unavailable

logger = logging.getLogger(__name__)


def new_turn_id() -> uuid.UUID:
    return uuid.uuid4()


@dataclass
class Turn:
    conversation: Conversation
    assistant: Message
    user_message: Message | None = None

    @property
    def message_id(self) -> str:
        return str(self.assistant.pk)

    @property
    def conversation_id(self) -> str:
        return str(self.conversation.pk)

    @property
    def request_id(self) -> str:
        return self.assistant.request_id


# ---------------------------------------------------------------- starting and stopping (sync)


def _queued(turn: Turn) -> Turn:
    """Hand the answer to an inference worker once it is committed (at once outside a transaction)."""
    transaction.on_commit(lambda: tasks.generate_reply.delay(turn.message_id))
    return turn


def start_chat(
    *, actor, content, turn_id, conversation_id=None, context_id=None, workflow_id=None, request_id=None
) -> Turn:
    conversation, user_message, assistant = services.chat_turn_start(
        actor=actor,
        content=content,
        conversation_id=conversation_id,
        context_id=context_id,
        workflow_id=workflow_id,
        request_id=request_id,
        turn_id=turn_id,
    )
    return _queued(Turn(conversation=conversation, assistant=assistant, user_message=user_message))


def start_regenerate(*, actor, message_id, turn_id) -> Turn:
    message = selectors.message_get(actor=actor, message_id=message_id)
    assistant = services.chat_regenerate(actor=actor, message=message, turn_id=turn_id)
    return _queued(Turn(conversation=assistant.conversation, assistant=assistant))


def start_edit(*, actor, message_id, content, turn_id) -> Turn:
    message = selectors.message_get(actor=actor, message_id=message_id)
    edited, assistant = services.chat_edit(actor=actor, message=message, content=content, turn_id=turn_id)
    return _queued(Turn(conversation=assistant.conversation, assistant=assistant, user_message=edited))


def start_completion(*, actor, messages, generation_params, turn_id, context_id=None, workflow_id=None) -> Turn:
    conversation, assistant = services.completion_turn_start(
        actor=actor,
        messages=messages,
        generation_params=generation_params,
        context_id=context_id,
        workflow_id=workflow_id,
        turn_id=turn_id,
    )
    return _queued(Turn(conversation=conversation, assistant=assistant))


def cancel(*, actor, message_id=None, request_id=None) -> tuple[Message, bool]:
    """Stop the actor's own answer, named by its id or by the client's request id (else 404)."""
    if message_id is not None:
        message = selectors.message_get(actor=actor, message_id=message_id)
    else:
        message = selectors.message_by_request(actor=actor, request_id=request_id)
    return message, services.generation_cancel(actor=actor, message=message)


def result(*, actor, message_id) -> dict:
    return chat_result(selectors.message_get(actor=actor, message_id=message_id))


TOOL_INVOKE_TIMEOUT = 75  # longer than a tool's largest timeout (60 s) and its first retry delay


def invoke_tool(*, actor, tool_id, inputs: dict, conversation_id=None, context_id=None) -> dict:
    """One tool call outside a chat, run on an inference worker with the workflow's timeouts,
    retries and circuit. Everything named must be the actor's (or visible to them), else 404."""
    from celery.exceptions import TimeoutError as CeleryTimeout
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import best_match

    from apps.accounts.ratelimit import rate_limit_hit
    from apps.artifacts import selectors as artifact_selectors
    from apps.knowledge import selectors as knowledge_selectors

    tool = artifact_selectors.artifact_get(actor=actor, artifact_id=tool_id, kind="tool.spec")
    fault = best_match(Draft202012Validator(tool.body.get("inputs") or {}).iter_errors(inputs))
    if fault is not None:
        pointer = "/inputs" + "".join(f"/{part}" for part in fault.absolute_path)
        raise Invalid(fault.message, field="inputs", details={"pointer": pointer})
    if conversation_id:
        selectors.conversation_get(actor=actor, conversation_id=conversation_id)
    if context_id and knowledge_selectors.context_get(actor=actor, context_id=context_id) is None:
        raise NotFound("Context not found.")
    rate_limit_hit(scope="chat_user", key=str(actor.id))
    pending = tasks.generate_tool_invocation.delay(
        str(actor.id),
        str(tool.pk),
        state.tool_inputs_put(inputs, ttl=TOOL_INVOKE_TIMEOUT + 60),
        str(conversation_id) if conversation_id else None,
        str(context_id) if context_id else None,
    )
    try:
        outcome = pending.get(timeout=TOOL_INVOKE_TIMEOUT)
    except CeleryTimeout as exc:
        pending.revoke()
        raise Unavailable("No worker ran the tool in time; try again.") from exc
    if outcome["status"] != "ok":
        raise Unavailable(outcome["error"], {"workflow_trace": outcome.get("workflow_trace", [])})
    return {"tool_id": str(tool.pk), "tool": tool.body["name"], **outcome}


def error_payload(exc) -> tuple[int, dict]:
    """(HTTP status, {code, message, details}) for any error a turn can raise."""
    status, code, message, details = error_parts(exc)
    return status, {"code": code, "message": message, "details": details}


# ---------------------------------------------------------------- following a stream (async)


async def subscribe(channel_layer, channel_name: str, turn_id) -> None:
    await channel_layer.group_add(generation_group(str(turn_id)), channel_name)


async def unsubscribe(channel_layer, channel_name: str, turn_id) -> None:
    """Leave an answer's stream. During a Redis outage the membership cannot be removed; it
    expires on its own, and the error that ends the caller's request is the one to report."""
    try:
        await channel_layer.group_discard(generation_group(str(turn_id)), channel_name)
    except OUTAGES as exc:
        logger.warning("Could not leave the stream of %s: %s", turn_id, exc)


class TurnStream:
    """One answer's events on a private channel, for entry points that are not consumers.
    Leaving before the answer is done (client gone, timeout) stops the answer."""

    def __init__(self, turn_id, *, actor=None):
        self.turn_id = str(turn_id)
        self.actor = actor
        self.layer = get_channel_layer()
        self.channel = None
        self.finished = False
        self.started = False

    async def __aenter__(self):
        self.channel = await self.layer.new_channel()
        await subscribe(self.layer, self.channel, self.turn_id)
        return self

    async def __aexit__(self, *exc):
        if self.channel is None:  # never subscribed
            return
        await unsubscribe(self.layer, self.channel, self.turn_id)
        if self.started and not self.finished:
            try:
                await sync_to_async(_cancel_quietly)(self.turn_id)
            except OUTAGES as error:  # the reaper ends an answer nobody waits for
                logger.warning("Could not stop the answer %s: %s", self.turn_id, error)

    def mark_started(self) -> None:
        self.started = True

    async def events(self, timeout: float | None = None):
        """Yields {"event": "token", "text"}, {"event": "trace", "entry"}, then exactly one of
        {"event": "done", "status", "error", "message_id"} or {"event": "error", "code", "message"}."""
        deadline = time.monotonic() + (timeout or settings.CHAT_API_TIMEOUT)
        while True:
            remaining = deadline - time.monotonic()
            try:
                if remaining <= 0:
                    raise TimeoutError
                event = await asyncio.wait_for(self.layer.receive(self.channel), remaining)
            except TimeoutError:
                yield {"event": "error", "code": "unavailable", "message": "The answer took too long; it was stopped."}
                return
            except OUTAGES as exc:
                logger.warning("Lost the stream of %s: %s", self.turn_id, exc)
                yield {"event": "error", "code": "unavailable", "message": "The answer's stream was interrupted."}
                return
            if event.get("stream_key") != self.turn_id:
                continue
            if event["type"] == "gen.token":
                yield {"event": "token", "text": event["text"]}
            elif event["type"] == "gen.trace":
                for entry in event["entries"]:
                    yield {"event": "trace", "entry": entry}
            elif event["type"] == "gen.done":
                self.finished = True
                yield {"event": "done", **{k: event.get(k) for k in ("status", "error", "message_id")}}
                return


def _cancel_quietly(turn_id: str) -> None:
    message = Message.objects.filter(pk=turn_id).first()
    if message is not None:
        services.generation_cancel(actor=message.owner, message=message)
