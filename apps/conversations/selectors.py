"""Reads scoped to the acting user: another user's conversation is indistinguishable from none."""

from dataclasses import dataclass

from django.contrib.postgres.search import SearchQuery, SearchVector
from django.db.models import Exists, OuterRef, Q
from django.http import Http404

from apps.conversations.models import Conversation, Message


def conversation_list(*, actor, query: str = ""):
    # Conversations made for /v1/chat/completions calls keep receipts, not a place in the sidebar.
    conversations = Conversation.objects.filter(owner=actor, origin="chat")
    query = (query or "").strip()
    if query:
        search = SearchQuery(query, config="english", search_type="websearch")
        matching_messages = (
            Message.objects.filter(conversation=OuterRef("pk"), owner=actor)
            .annotate(document=SearchVector("content", config="english"))
            .filter(document=search)
        )
        conversations = conversations.annotate(
            title_document=SearchVector("title", config="english"),
        ).filter(Q(title_document=search) | Q(title__icontains=query) | Exists(matching_messages))
    return conversations.order_by("-updated_at")


def conversation_get(*, actor, conversation_id) -> Conversation:
    conversation = Conversation.objects.filter(owner=actor, pk=conversation_id).first()
    if conversation is None:
        raise Http404("Conversation not found.")
    return conversation


def message_get(*, actor, message_id) -> Message:
    message = Message.objects.select_related("conversation", "parent").filter(owner=actor, pk=message_id).first()
    if message is None:
        raise Http404("Message not found.")
    return message


def message_by_request(*, actor, request_id: str) -> Message:
    message = Message.objects.filter(owner=actor, request_id=request_id).first()
    if message is None:
        raise Http404("No generation with this request id.")
    return message


@dataclass
class PathEntry:
    message: Message
    sibling_index: int  # 1-based, for "‹ 2/3 ›"
    sibling_count: int
    previous_sibling_id: str | None
    next_sibling_id: str | None


def path_to(message: Message | None) -> list[Message]:
    """Messages from the root to `message`, inclusive."""
    if message is None:
        return []
    by_id = {m.pk: m for m in Message.objects.filter(conversation_id=message.conversation_id)}
    path = []
    node = by_id.get(message.pk)
    while node is not None:
        path.append(node)
        node = by_id.get(node.parent_id)
    return list(reversed(path))


def _entry(message: Message, siblings: list[Message]) -> PathEntry:
    index = siblings.index(message)
    return PathEntry(
        message=message,
        sibling_index=index + 1,
        sibling_count=len(siblings),
        previous_sibling_id=str(siblings[index - 1].pk) if index > 0 else None,
        next_sibling_id=str(siblings[index + 1].pk) if index + 1 < len(siblings) else None,
    )


def message_position(message: Message) -> PathEntry:
    """One message with its place among its siblings."""
    siblings = list(
        Message.objects.filter(conversation_id=message.conversation_id, parent_id=message.parent_id).order_by(
            "created_at"
        )
    )
    return _entry(message, siblings)


def conversation_path(*, conversation: Conversation) -> list[PathEntry]:
    """The selected branch, with each message's position among its siblings."""
    messages = list(Message.objects.filter(conversation=conversation).order_by("created_at"))
    by_id = {m.pk: m for m in messages}
    children: dict = {}
    for m in messages:
        children.setdefault(m.parent_id, []).append(m)
    leaf = by_id.get(conversation.current_leaf_id)
    if leaf is None and messages:
        leaf = messages[-1]
    path = []
    node = leaf
    while node is not None:
        path.append(node)
        node = by_id.get(node.parent_id)
    return [_entry(m, children[m.parent_id]) for m in reversed(path)]
