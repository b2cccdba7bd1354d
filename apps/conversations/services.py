"""Writes for conversations and the chat turn lifecycle. Every function takes the acting user."""

import uuid

from django.conf import settings
from django.db import transaction
from django.http import Http404
from django.utils import timezone
from rest_framework.exceptions import ValidationError

from apps.conversations import selectors, state
from apps.conversations.models import Conversation, Message
from apps.training import services as training_services
from liminal.api import Conflict


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
    assert conversation.owner_id == actor.id
    conversation.title = _clean_title(title)
    conversation.title_is_generated = False
    conversation.save(update_fields=["title", "title_is_generated"])
    return conversation


@transaction.atomic
def conversation_delete(*, actor, conversation: Conversation) -> None:
    assert conversation.owner_id == actor.id
    for message in conversation.messages.filter(status__in=[Message.Status.QUEUED, Message.Status.STREAMING]):
        if message.request_id:
            state.cancel_request(message.request_id)
    conversation.delete()


def _touch(conversation: Conversation, leaf: Message) -> None:
    conversation.current_leaf = leaf
    conversation.updated_at = timezone.now()
    conversation.save(update_fields=["current_leaf", "updated_at"])


def _start_assistant(*, actor, conversation: Conversation, parent: Message, request_id: str | None) -> Message:
    request_id = request_id or uuid.uuid4().hex
    state.generation_slot_acquire(user_id=actor.id, request_id=request_id)
    try:
        assistant = Message.objects.create(
            conversation=conversation,
            owner=actor,
            parent=parent,
            role=Message.Role.ASSISTANT,
            status=Message.Status.QUEUED,
            request_id=request_id,
        )
    except Exception:
        state.generation_slot_release(user_id=actor.id, request_id=request_id)
        raise
    _touch(conversation, assistant)

    def enqueue():
        from apps.conversations.tasks import generate_reply

        generate_reply.delay(str(assistant.id))

    transaction.on_commit(enqueue)
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
) -> tuple[Conversation, Message, Message]:
    """Save the user's message at the end of the current branch and queue the answer (after
    commit). The conversation is given, or named by id (the actor's own, else 404), or created.
    `context_id` also binds one of the actor's contexts to the conversation first."""
    content = _clean_content(content)
    if conversation is None and conversation_id:
        conversation = selectors.conversation_get(actor=actor, conversation_id=conversation_id)
    if conversation is None:
        conversation = conversation_create(actor=actor)
    if context_id:
        conversation_context_add(actor=actor, conversation=conversation, context_id=context_id)
    assert conversation.owner_id == actor.id
    conversation = Conversation.objects.select_for_update().get(pk=conversation.pk)
    parent = conversation.current_leaf
    if parent is not None and parent.is_pending:
        raise Conflict("The previous answer is still being generated; stop it or wait.")
    user_message = Message.objects.create(
        conversation=conversation, owner=actor, parent=parent, role=Message.Role.USER, content=content
    )
    assistant = _start_assistant(actor=actor, conversation=conversation, parent=user_message, request_id=request_id)
    return conversation, user_message, assistant


@transaction.atomic
def chat_regenerate(*, actor, message: Message, request_id: str | None = None) -> Message:
    """A new answer to the same user message, as a sibling of `message`."""
    assert message.owner_id == actor.id
    if message.role != Message.Role.ASSISTANT or message.parent is None:
        raise ValidationError({"message_id": ["Only answers can be regenerated."]})
    conversation = Conversation.objects.select_for_update().get(pk=message.conversation_id)
    return _start_assistant(actor=actor, conversation=conversation, parent=message.parent, request_id=request_id)


@transaction.atomic
def chat_edit(*, actor, message: Message, content, request_id: str | None = None) -> tuple[Message, Message]:
    """Edit-and-rerun: a sibling of the user's message with new content, and a new answer to it."""
    assert message.owner_id == actor.id
    if message.role != Message.Role.USER:
        raise ValidationError({"message_id": ["Only your own messages can be edited."]})
    content = _clean_content(content)
    conversation = Conversation.objects.select_for_update().get(pk=message.conversation_id)
    edited = Message.objects.create(
        conversation=conversation, owner=actor, parent=message.parent, role=Message.Role.USER, content=content
    )
    assistant = _start_assistant(actor=actor, conversation=conversation, parent=edited, request_id=request_id)
    return edited, assistant


def branch_select(*, actor, message: Message) -> Message:
    """Show the branch through `message`: its most recent line of descendants."""
    assert message.owner_id == actor.id
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
    assert message.owner_id == actor.id
    if not message.is_pending or not message.request_id:
        return False
    state.cancel_request(message.request_id)
    if message.status == Message.Status.QUEUED:
        # Not picked up by a worker yet: settle it here; the worker will see the flag and skip it.
        _settle_if_still(message, Message.Status.CANCELLED, receipt={"finish_reason": "cancelled"})
    return True


def _announce_done(request_id: str, message_id, status: str, error: str) -> None:
    from apps.conversations.streaming import publish

    publish(request_id, {"type": "gen.done", "message_id": str(message_id), "status": status, "error": error})


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
    Message.objects.filter(pk=message.pk).update(
        content=content, status=status, receipt=receipt, error=error, finished_at=timezone.now()
    )
    state.generation_slot_release(user_id=message.owner_id, request_id=message.request_id)
    _announce_done(message.request_id, message.pk, status, error)


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
        state.generation_slot_release(user_id=message.owner_id, request_id=message.request_id)
        _announce_done(message.request_id, message.pk, status, error)
    return updated


def message_thumb(*, actor, message: Message, kind: str | None):
    assert message.owner_id == actor.id
    if message.role != Message.Role.ASSISTANT or message.status != Message.Status.COMPLETE:
        raise ValidationError({"message_id": ["Only finished answers can be rated."]})
    prompt = message.parent.content if message.parent_id else ""
    return training_services.thumbs_set(actor=actor, message=message, prompt=prompt, kind=kind)


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

    assert conversation.owner_id == actor.id
    contexts = []
    for context_id in context_ids:
        context = knowledge_selectors.context_get(actor=actor, context_id=context_id)
        if context is None:
            raise Http404("Context not found.")
        contexts.append(context)
    conversation.contexts.set(contexts)
    return contexts


def conversation_context_add(*, actor, conversation: Conversation, context_id) -> None:
    from apps.knowledge import selectors as knowledge_selectors

    assert conversation.owner_id == actor.id
    context = knowledge_selectors.context_get(actor=actor, context_id=context_id)
    if context is None:
        raise Http404("Context not found.")
    conversation.contexts.add(context)
