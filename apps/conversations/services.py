"""Writes for conversations and the chat turn lifecycle. Every function takes the acting user."""

import logging
import uuid

from django.conf import settings
from django.db import DatabaseError, IntegrityError, transaction
from django.utils import timezone
from rest_framework.exceptions import ValidationError

from apps.artifacts import selectors as artifact_selectors
from apps.artifacts.models import Artifact
from apps.conversations import selectors, state
from apps.conversations.models import Conversation, Message
from apps.training import services as training_services
from liminal.errors import Conflict, NotFound, ensure_owner

logger = logging.getLogger(__name__)
UNSAVED_ERROR = "The answer could not be saved because the database is unreachable; please retry in a moment."

DEFAULT_WORKFLOW_NAME = "chat.default"


def _clean_content(content) -> str:
    if not isinstance(content, str):
        raise ValidationError({"content": ["Message content must be text."]})
    content = content.replace("\x00", "").strip()
    if not content:
        raise ValidationError({"content": ["Message is empty."]})
    if len(content) > settings.CHAT_MAX_MESSAGE_CHARS:
        raise ValidationError(
            {
                "content": [
                    f"Message is too long ({len(content)} characters; the limit is {settings.CHAT_MAX_MESSAGE_CHARS})."
                ]
            }
        )
    return content


def _clean_title(title) -> str:
    if not isinstance(title, str):
        raise ValidationError({"title": ["Title must be text."]})
    title = " ".join(title.split())
    if len(title) > 200:
        raise ValidationError({"title": ["Title is at most 200 characters."]})
    return title


def conversation_create(*, actor, title: str = "") -> Conversation:
    return Conversation.objects.create(owner=actor, title=_clean_title(title))


def conversation_rename(*, actor, conversation: Conversation, title: str) -> Conversation:
    ensure_owner(conversation, actor, "Conversation not found.")
    conversation.title = _clean_title(title)
    conversation.title_is_generated = False
    conversation.save(update_fields=["title", "title_is_generated"])
    return conversation


@transaction.atomic
def conversation_delete(*, actor, conversation: Conversation) -> None:
    ensure_owner(conversation, actor, "Conversation not found.")
    for message in conversation.messages.filter(status__in=[Message.Status.QUEUED, Message.Status.STREAMING]):
        state.cancel_request(message.stream_key)
    conversation.delete()


def _touch(conversation: Conversation, leaf: Message) -> None:
    conversation.current_leaf = leaf
    conversation.updated_at = timezone.now()
    conversation.save(update_fields=["current_leaf", "updated_at"])


def workflow_for(*, actor, conversation: Conversation | None = None, workflow_id=None) -> Artifact:
    """The workflow.chat artifact that answers: the one named (visible to the actor, else 404),
    else the conversation's, else the global default."""
    if workflow_id:
        return artifact_selectors.artifact_get(actor=actor, artifact_id=workflow_id, kind="workflow.chat")
    if conversation is not None and conversation.workflow_id:
        workflow = (
            artifact_selectors.artifact_list(actor=actor, kind="workflow.chat")
            .filter(pk=conversation.workflow_id)
            .first()
        )
        if workflow is not None:
            return workflow
    workflow = artifact_selectors.global_artifact(kind="workflow.chat", name=DEFAULT_WORKFLOW_NAME)
    if workflow is None or workflow.current_version_id is None:
        raise Conflict("No chat workflow is installed; run the migrations.")
    return workflow


def conversation_workflow_set(*, actor, conversation: Conversation, workflow_id) -> Conversation:
    """Pick the workflow for this conversation's next answers (None: the default)."""
    ensure_owner(conversation, actor, "Conversation not found.")
    conversation.workflow = workflow_for(actor=actor, workflow_id=workflow_id) if workflow_id else None
    conversation.save(update_fields=["workflow"])
    return conversation


def _clean_request_id(actor, request_id: str | None) -> str:
    """A client's label for its answer, unique per user: a reused one is refused, never merged."""
    if not request_id:
        return uuid.uuid4().hex
    if Message.objects.filter(owner=actor, request_id=request_id).exists():
        raise Conflict("This request_id was already used; send a new one.", {"request_id": request_id})
    return request_id


def _start_assistant(
    *,
    actor,
    conversation: Conversation,
    parent: Message,
    request_id: str | None,
    turn_id=None,
    workflow_id=None,
    generation_params: dict | None = None,
) -> Message:
    """Create the queued answer (id `turn_id`, issued by the server so the caller could subscribe
    to its stream first) and take one of the user's generation slots. The orchestrator queues
    it for a worker once the transaction commits."""
    client_chose_id = bool(request_id)
    request_id = _clean_request_id(actor, request_id)
    workflow = workflow_for(actor=actor, conversation=conversation, workflow_id=workflow_id)
    if workflow_id:
        conversation.workflow = workflow
        conversation.save(update_fields=["workflow"])
    assistant_id = turn_id or uuid.uuid4()
    state.generation_slot_acquire(user_id=actor.id, stream_key=str(assistant_id))
    try:
        # A savepoint (two round trips) only where a client-chosen request_id can collide;
        # the server's own ids are fresh uuids.
        with transaction.atomic(savepoint=client_chose_id):
            assistant = Message.objects.create(
                id=assistant_id,
                conversation=conversation,
                owner=actor,
                parent=parent,
                role=Message.Role.ASSISTANT,
                status=Message.Status.QUEUED,
                request_id=request_id,
                workflow_version=workflow.current_version,
                generation_params=generation_params or {},
            )
    except IntegrityError as exc:
        state.generation_slot_release(user_id=actor.id, stream_key=str(assistant_id))
        raise Conflict("This request_id was already used; send a new one.", {"request_id": request_id}) from exc
    except Exception:
        state.generation_slot_release(user_id=actor.id, stream_key=str(assistant_id))
        raise
    _touch(conversation, assistant)
    return assistant


@transaction.atomic
def chat_turn_start(
    *,
    actor,
    content,
    conversation: Conversation | None = None,
    conversation_id=None,
    request_id: str | None = None,
    context_id=None,
    workflow_id=None,
    turn_id=None,
) -> tuple[Conversation, Message, Message]:
    """Save the user's message at the end of the current branch and queue the answer (after
    commit). The conversation is given, or named by id (the actor's own, else 404), or created.
    `context_id` also binds one of the actor's contexts to the conversation first; `workflow_id`
    picks the conversation's workflow from now on."""
    content = _clean_content(content)
    if conversation is None and conversation_id:
        conversation = selectors.conversation_get(actor=actor, conversation_id=conversation_id)
    created_here = conversation is None
    if created_here:
        conversation = conversation_create(actor=actor)
    if context_id:
        conversation_context_add(actor=actor, conversation=conversation, context_id=context_id)
    ensure_owner(conversation, actor, "Conversation not found.")
    if not created_here:
        # Two turns on one conversation must not both hang off the same leaf. A conversation
        # created in this transaction is invisible to others, so it needs no lock.
        conversation = Conversation.objects.select_for_update().get(pk=conversation.pk)
    parent = conversation.current_leaf
    if parent is not None and parent.is_pending:
        raise Conflict("The previous answer is still being generated; stop it or wait.")
    user_message = Message.objects.create(
        conversation=conversation, owner=actor, parent=parent, role=Message.Role.USER, content=content
    )
    assistant = _start_assistant(
        actor=actor,
        conversation=conversation,
        parent=user_message,
        request_id=request_id,
        turn_id=turn_id,
        workflow_id=workflow_id,
    )
    return conversation, user_message, assistant


@transaction.atomic
def completion_turn_start(
    *, actor, messages: list[dict], generation_params: dict, context_id=None, workflow_id=None, turn_id=None
) -> tuple[Conversation, Message]:
    """An OpenAI-style call as a stored turn: the transcript becomes a conversation (kept out of
    the sidebar) whose last user message is answered by the workflow like any chat."""
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system").strip()
    turns = [m for m in messages if m["role"] in ("user", "assistant")]
    if not turns or turns[-1]["role"] != "user":
        raise ValidationError({"messages": ["The last message must be the user's."]})
    conversation = Conversation.objects.create(owner=actor, origin="completions", system_prompt=system)
    if context_id:
        conversation_context_add(actor=actor, conversation=conversation, context_id=context_id)
    parent = None
    for turn in turns:
        parent = Message.objects.create(
            conversation=conversation,
            owner=actor,
            parent=parent,
            role=turn["role"],
            content=_clean_content(turn["content"]) if turn["role"] == "user" else turn["content"],
        )
    assistant = _start_assistant(
        actor=actor,
        conversation=conversation,
        parent=parent,
        request_id=None,
        turn_id=turn_id,
        workflow_id=workflow_id,
        generation_params=generation_params,
    )
    return conversation, assistant


@transaction.atomic
def chat_regenerate(*, actor, message: Message, request_id: str | None = None, turn_id=None) -> Message:
    """A new answer to the same user message, as a sibling of `message`."""
    ensure_owner(message, actor, "Message not found.")
    if message.role != Message.Role.ASSISTANT or message.parent is None:
        raise ValidationError({"message_id": ["Only answers can be regenerated."]})
    conversation = Conversation.objects.select_for_update().get(pk=message.conversation_id)
    # Asked for another answer: the workflow's regenerate sampling, so it is not the same one again.
    defaults = workflow_for(actor=actor, conversation=conversation).body.get("defaults") or {}
    return _start_assistant(
        actor=actor,
        conversation=conversation,
        parent=message.parent,
        request_id=request_id,
        turn_id=turn_id,
        generation_params=defaults.get("regenerate_sampling"),
    )


@transaction.atomic
def chat_edit(
    *, actor, message: Message, content, request_id: str | None = None, turn_id=None
) -> tuple[Message, Message]:
    """Edit-and-rerun: a sibling of the user's message with new content, and a new answer to it."""
    ensure_owner(message, actor, "Message not found.")
    if message.role != Message.Role.USER:
        raise ValidationError({"message_id": ["Only your own messages can be edited."]})
    content = _clean_content(content)
    conversation = Conversation.objects.select_for_update().get(pk=message.conversation_id)
    edited = Message.objects.create(
        conversation=conversation, owner=actor, parent=message.parent, role=Message.Role.USER, content=content
    )
    assistant = _start_assistant(
        actor=actor, conversation=conversation, parent=edited, request_id=request_id, turn_id=turn_id
    )
    return edited, assistant


def branch_select(*, actor, message: Message) -> Message:
    """Show the branch through `message`: its most recent line of descendants."""
    ensure_owner(message, actor, "Message not found.")
    leaf = message
    while True:
        child = leaf.children.order_by("-created_at").first()
        if child is None:
            break
        leaf = child
    _touch(message.conversation, leaf)
    return leaf


def generation_cancel(*, actor, message: Message) -> bool:
    """Ask the engine to stop this answer; the worker stores what was generated so far."""
    ensure_owner(message, actor, "Message not found.")
    if not message.is_pending:
        return False
    state.cancel_request(message.stream_key)
    if message.status == Message.Status.QUEUED:
        # Not picked up by a worker yet: settle it here; the worker will see the flag and skip it.
        _settle_if_still(message, Message.Status.CANCELLED, receipt={"finish_reason": "cancelled"})
    return True


def _announce_done(message_id, status: str, error: str) -> None:
    from apps.conversations.streaming import publish

    publish(str(message_id), {"type": "gen.done", "message_id": str(message_id), "status": status, "error": error})


def generation_started(*, message: Message) -> bool:
    """Claim a queued answer for this worker; False when it was cancelled or taken meanwhile."""
    claimed = Message.objects.filter(pk=message.pk, status=Message.Status.QUEUED).update(
        status=Message.Status.STREAMING
    )
    if claimed:
        state.heartbeat(message.pk)
    return bool(claimed)


def generation_progress(*, message: Message, content: str) -> None:
    Message.objects.filter(pk=message.pk, status=Message.Status.STREAMING).update(content=content)
    state.heartbeat(message.pk)


def generation_finish(*, message: Message, content: str, status: str, receipt: dict, error: str = "") -> None:
    """Store how an answer ended and tell its listeners. When the database cannot be reached the
    listeners still hear that it failed (through Redis), rather than waiting for nothing; the
    answer stays `streaming` with its last saved text until the stalled-answer reaper, once the
    database is back, stores it as failed."""
    try:
        Message.objects.filter(pk=message.pk).update(
            content=content, status=status, receipt=receipt, error=error, finished_at=timezone.now()
        )
    except DatabaseError:
        logger.exception("Could not store the end of answer %s", message.pk)
        status, error = Message.Status.FAILED, UNSAVED_ERROR
    state.generation_slot_release(user_id=message.owner_id, stream_key=message.stream_key)
    _announce_done(message.pk, status, error)


def generation_stored_content(*, message: Message) -> str:
    """The answer's text as last saved ("" when the database cannot be reached)."""
    try:
        return Message.objects.values_list("content", flat=True).get(pk=message.pk)
    except DatabaseError:
        return ""


def generations_reap_stalled() -> int:
    """Fail answers whose worker died (no heartbeat) or that no worker picked up in time."""
    now = timezone.now()
    reaped = 0
    streaming = Message.objects.filter(status=Message.Status.STREAMING)
    for message in streaming:
        if not state.heartbeat_alive(message.pk):
            reaped += _fail(message, "The worker generating this answer stopped unexpectedly. Please retry.")
    stale_queued = Message.objects.filter(
        status=Message.Status.QUEUED, created_at__lt=now - timezone.timedelta(seconds=settings.GENERATION_QUEUE_TIMEOUT)
    )
    for message in stale_queued:
        reaped += _fail(message, "No inference worker picked up this answer in time. Please retry.")
    return reaped


def _fail(message: Message, error: str) -> int:
    return _settle_if_still(
        message, Message.Status.FAILED, error=error, receipt={**message.receipt, "finish_reason": "error"}
    )


def _settle_if_still(message: Message, status: str, *, receipt: dict, error: str = "") -> int:
    """End an answer that is still in the status it was read in (a worker may have moved it on
    meanwhile): store the outcome, free the user's generation slot, tell the listeners."""
    updated = Message.objects.filter(pk=message.pk, status=message.status).update(
        status=status, error=error, receipt=receipt, finished_at=timezone.now()
    )
    if updated:
        state.generation_slot_release(user_id=message.owner_id, stream_key=message.stream_key)
        _announce_done(message.pk, status, error)
    return updated


def message_thumb(*, actor, message: Message, kind: str | None):
    ensure_owner(message, actor, "Message not found.")
    if message.role != Message.Role.ASSISTANT or message.status != Message.Status.COMPLETE:
        raise ValidationError({"message_id": ["Only finished answers can be rated."]})
    return training_services.thumbs_set(actor=actor, message=message, kind=kind)


def conversation_title_set(*, conversation: Conversation, title: str) -> bool:
    """Store a generated title unless the user has named the conversation meanwhile."""
    title = _clean_title(title)[:80]
    if not title:
        return False
    return bool(Conversation.objects.filter(pk=conversation.pk, title="").update(title=title, title_is_generated=True))


def conversation_summary_set(*, conversation: Conversation, summary: str, through: Message) -> None:
    Conversation.objects.filter(pk=conversation.pk).update(summary=summary, summary_through=through)


@transaction.atomic
def conversation_contexts_set(*, actor, conversation: Conversation, context_ids) -> list:
    """Bind exactly these contexts; each must be the actor's own (else 404, nothing changes)."""
    from apps.knowledge import selectors as knowledge_selectors

    ensure_owner(conversation, actor, "Conversation not found.")
    contexts = []
    for context_id in context_ids:
        context = knowledge_selectors.context_get(actor=actor, context_id=context_id)
        if context is None:
            raise NotFound("Context not found.")
        contexts.append(context)
    conversation.contexts.set(contexts)
    return contexts


def conversation_context_add(*, actor, conversation: Conversation, context_id) -> None:
    from apps.knowledge import selectors as knowledge_selectors

    ensure_owner(conversation, actor, "Conversation not found.")
    context = knowledge_selectors.context_get(actor=actor, context_id=context_id)
    if context is None:
        raise NotFound("Context not found.")
    conversation.contexts.add(context)
