"""Server-rendered chat UI. Streaming happens over /ws/chat/ (consumers.py); these views serve
pages and the small HTMX interactions (rename, delete, search, branch navigation, thumbs)."""

import re

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import HttpResponse
from django.shortcuts import render
from django.template.loader import render_to_string
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST
from rest_framework.exceptions import ValidationError

from apps.artifacts import selectors as artifact_selectors
from apps.conversations import selectors, services
from apps.conversations.models import Message
from apps.conversations.rendering import render_markdown
from apps.training import selectors as training_selectors
from apps.training import services as training_services
from apps.training.models import PreferenceEvent
from liminal.errors import DomainError

_CITATION = re.compile(r"\[(\d{1,2})\]")


def _link_citations(html: str, message: Message) -> str:
    """Turn [n] in a grounded answer into buttons that open passage n."""
    chunks = {c["index"]: c["chunk_id"] for c in ((message.receipt or {}).get("retrieval") or {}).get("chunks", [])}
    if not chunks:
        return html

    def link(match):
        index = int(match.group(1))
        if index not in chunks:
            return match.group(0)
        url = reverse("knowledge:chunk", args=[chunks[index]])
        return (
            f'<button type="button" class="cite" hx-get="{url}" hx-target="#passage-{message.pk}" '
            f'hx-swap="innerHTML">[{index}]</button>'
        )

    return _CITATION.sub(link, html)


def _answer_html(message: Message) -> str:
    if message.role != Message.Role.ASSISTANT or message.is_pending:
        return ""
    return _link_citations(render_markdown(message.content), message)


def _signals_for(user, message_ids) -> dict:
    """message id -> what the user has said about that answer: their thumb, whether they gave a
    better answer, whether they kept it over a regenerated sibling."""
    message_ids = list(message_ids)
    signals = {pk: {"thumb": None, "corrected": False, "kept": False} for pk in message_ids}
    for message_id, kind in training_selectors.thumbs_for_messages(actor=user, message_ids=message_ids).items():
        signals[message_id]["thumb"] = kind
    judged = training_selectors.events_list(actor=user).filter(
        message_id__in=message_ids, kind__in=(PreferenceEvent.Kind.CORRECTION, PreferenceEvent.Kind.PICK)
    )
    for message_id, kind in judged.values_list("message_id", "kind"):
        signals[message_id]["corrected" if kind == PreferenceEvent.Kind.CORRECTION else "kept"] = True
    return signals


def _entry_context(entry, signals, shown_before=None) -> dict:
    message = entry.message
    neighbours = [entry.previous_sibling_id, entry.next_sibling_id]
    # "Keep this one" prefers the sibling the user was looking at before this one; without that
    # (a fresh page, a new answer) the neighbour created just before it, or just after for the first.
    keep_against = shown_before if shown_before and shown_before in neighbours else neighbours[0] or neighbours[1]
    return {
        "m": message,
        "html": _answer_html(message),
        "sibling_index": entry.sibling_index,
        "sibling_count": entry.sibling_count,
        "previous_sibling_id": entry.previous_sibling_id,
        "next_sibling_id": entry.next_sibling_id,
        # A better answer is a thumbs down with more to say.
        "thumb": signals["thumb"] or (PreferenceEvent.Kind.THUMBS_DOWN if signals["corrected"] else None),
        "corrected": signals["corrected"],
        "kept": signals["kept"],
        "keep_against": keep_against,
        "answered_ms": _answered_ms(message),
    }


def _answered_ms(message: Message) -> int | None:
    """From the user's send (the answer is created then) to the answer's end: the wait a user saw."""
    if message.role != Message.Role.ASSISTANT or message.finished_at is None:
        return None
    return round((message.finished_at - message.created_at).total_seconds() * 1000)


def message_context(message: Message, user, **extra) -> dict:
    signals = _signals_for(user, [message.pk])[message.pk]
    return {**_entry_context(selectors.message_position(message), signals), **extra}


def messages_context(conversation, user, shown_before: dict | None = None) -> list[dict]:
    """The selected path's entries; `shown_before` maps a parent id to the sibling shown before."""
    entries = selectors.conversation_path(conversation=conversation)
    signals = _signals_for(user, [e.message.pk for e in entries])
    shown_before = shown_before or {}
    return [_entry_context(e, signals[e.message.pk], shown_before.get(e.message.parent_id)) for e in entries]


def sidebar_item_html(conversation, *, prepend_oob: bool = False, active: bool = False) -> str:
    html = render_to_string(
        "conversations/_sidebar_item.html", {"c": conversation, "active_id": conversation.pk if active else None}
    )
    if prepend_oob:
        # An out-of-band afterbegin swap inserts the children of the element it arrives in.
        html = f'<div hx-swap-oob="afterbegin:#conversation-list">{html}</div>'
    return html


def _picker_context(user, conversation) -> dict:
    from apps.knowledge import selectors as knowledge_selectors

    bound = list(conversation.contexts.all()) if conversation else []
    workflows = list(artifact_selectors.artifact_list(actor=user, kind="workflow.chat"))
    current = services.workflow_for(actor=user, conversation=conversation) if workflows else None
    return {
        "all_contexts": knowledge_selectors.context_list(actor=user),
        "bound_ids": {c.pk for c in bound},
        "bound_names": [c.name for c in bound],
        "workflows": workflows,
        "current_workflow_id": current.pk if current else None,
    }


def _page(request, conversation=None, status=200):
    return render(
        request,
        "conversations/chat.html",
        {
            **_picker_context(request.user, conversation),
            "conversation": conversation,
            "conversations": selectors.conversation_list(actor=request.user)[:200],
            "entries": messages_context(conversation, request.user) if conversation else [],
            "active_id": conversation.pk if conversation else None,
        },
        status=status,
    )


@login_required
@require_GET
def chat_home(request):
    return _page(request)


@login_required
@require_GET
def conversation_page(request, conversation_id):
    return _page(request, selectors.conversation_get(actor=request.user, conversation_id=conversation_id))


@login_required
@require_GET
def conversation_search(request):
    query = request.GET.get("q", "")[:200]
    conversations = selectors.conversation_list(actor=request.user, query=query)[:200]
    return render(
        request,
        "conversations/_sidebar_list.html",
        {"conversations": conversations, "query": query, "active_id": request.GET.get("active")},
    )


@login_required
@require_POST
def conversation_rename(request, conversation_id):
    conversation = selectors.conversation_get(actor=request.user, conversation_id=conversation_id)
    try:
        services.conversation_rename(actor=request.user, conversation=conversation, title=request.POST.get("title", ""))
    except ValidationError as exc:
        return HttpResponse(str(exc.detail["title"][0]), status=400)
    return HttpResponse(sidebar_item_html(conversation, active=True))


@login_required
@require_POST
def conversation_delete(request, conversation_id):
    conversation = selectors.conversation_get(actor=request.user, conversation_id=conversation_id)
    services.conversation_delete(actor=request.user, conversation=conversation)
    response = HttpResponse("")
    if request.POST.get("current") == "1":
        response["HX-Redirect"] = reverse("chat-home")
    return response


@login_required
@require_POST
def branch_select(request, message_id):
    message = selectors.message_get(actor=request.user, message_id=message_id)
    services.branch_select(actor=request.user, message=message)
    conversation = selectors.conversation_get(actor=request.user, conversation_id=message.conversation_id)
    shown_before = {message.parent_id: request.POST.get("shown", "")}
    return render(
        request,
        "conversations/_messages.html",
        {"entries": messages_context(conversation, request.user, shown_before), "conversation": conversation},
    )


@login_required
@require_POST
def message_thumb(request, message_id):
    """The thumbs toggle. Clearing a thumbs down that came with a better answer takes that back too."""
    message = selectors.message_get(actor=request.user, message_id=message_id)
    kind = request.POST.get("kind") or None
    if kind not in (None, PreferenceEvent.Kind.THUMBS_UP, PreferenceEvent.Kind.THUMBS_DOWN):
        return HttpResponse("Unknown rating.", status=400)
    try:
        with transaction.atomic():
            services.message_thumb(actor=request.user, message=message, kind=kind)
            if kind is None and request.POST.get("forget_correction") == "1":
                corrections = training_selectors.events_list(actor=request.user, kind=PreferenceEvent.Kind.CORRECTION)
                for event in corrections.filter(message=message):
                    training_services.event_forget(actor=request.user, event=event)
    except ValidationError:
        return HttpResponse("Only finished answers can be rated.", status=400)
    return render(request, "conversations/_message.html", message_context(message, request.user))


@login_required
@require_GET
def message_fragment(request, message_id):
    message = selectors.message_get(actor=request.user, message_id=message_id)
    return render(request, "conversations/_message.html", message_context(message, request.user))


@login_required
@require_GET
def message_edit_form(request, message_id):
    message = selectors.message_get(actor=request.user, message_id=message_id)
    if message.role != Message.Role.USER:
        return HttpResponse("Only your own messages can be edited.", status=400)
    return render(request, "conversations/_edit_form.html", {"m": message})


@login_required
@require_POST
def conversation_contexts(request):
    """Bind the chosen contexts; a chat that does not exist yet is created for them."""
    conversation_id = request.POST.get("conversation_id")
    context_ids = request.POST.getlist("context_ids")
    if conversation_id:
        conversation = selectors.conversation_get(actor=request.user, conversation_id=conversation_id)
        services.conversation_contexts_set(actor=request.user, conversation=conversation, context_ids=context_ids)
        return render(request, "conversations/_context_picker.html", _picker_context(request.user, conversation))
    with transaction.atomic():
        conversation = services.conversation_create(actor=request.user)
        services.conversation_contexts_set(actor=request.user, conversation=conversation, context_ids=context_ids)
    response = HttpResponse("")
    response["HX-Redirect"] = reverse("conversation", args=[conversation.pk])
    return response


def _chat_files_context(user, conversation):
    """The context that holds the files attached in this chat: made and bound on first use,
    found by its name afterwards (and bound again if the user unbound it)."""
    from apps.knowledge import selectors as knowledge_selectors
    from apps.knowledge import services as knowledge_services

    name = f"Chat files {conversation.pk.hex[:8]}"
    context = knowledge_selectors.context_list(actor=user).filter(name__iexact=name).first()
    if context is None:
        title = conversation.title or "a new conversation"
        context = knowledge_services.context_create(
            actor=user, name=name, description=f"Files attached in the chat “{title}”."
        )
    services.conversation_context_add(actor=user, conversation=conversation, context_id=context.pk)
    return context


def _attach(user, conversation, upload):
    """Store the upload in the chat's context; a file the user already has is linked instead."""
    from apps.knowledge import selectors as knowledge_selectors
    from apps.knowledge import services as knowledge_services

    if upload.size > settings.MAX_UPLOAD_BYTES:
        raise knowledge_services.UploadTooLarge(upload.size)
    context = _chat_files_context(user, conversation)
    try:
        return knowledge_services.file_upload(
            actor=user,
            name=upload.name,
            content=upload.read(),
            content_type=upload.content_type or "",
            context_ids=[context.pk],
        )
    except DomainError as exc:
        if exc.error_code != "duplicate_file":
            raise
        file = knowledge_selectors.file_get(actor=user, file_id=exc.details["file_id"])
        knowledge_services.context_file_add(context=context, file=file)
        return file


@login_required
@require_POST
def conversation_attach(request):
    """The composer's attach button: the file goes into a context bound to this chat (a chat
    that does not exist yet is created for it, without leaving the page), then is read and
    indexed in the background. Answers cite it once it is ready."""
    upload = request.FILES.get("file")
    if upload is None:
        return render(request, "conversations/_notice.html", {"text": "Choose a file to attach."}, status=400)
    conversation_id = request.POST.get("conversation_id")
    is_new = not conversation_id
    try:
        with transaction.atomic():
            if is_new:
                conversation = services.conversation_create(actor=request.user)
            else:
                conversation = selectors.conversation_get(actor=request.user, conversation_id=conversation_id)
            file = _attach(request.user, conversation, upload)
    except DomainError as exc:
        return render(request, "conversations/_notice.html", {"text": exc.message}, status=exc.status_code)
    return render(
        request,
        "conversations/_attached.html",
        {
            **_picker_context(request.user, conversation),
            "conversation": conversation,
            "file": file,
            "sidebar_item": sidebar_item_html(conversation, prepend_oob=True, active=True) if is_new else "",
        },
    )
