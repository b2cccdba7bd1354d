"""Server-rendered pages for what users teach Liminal: the feedback form on an answer, "Keep this
one" after regenerating, the Feedback page (their signals, each deletable) and the Memory page.

Writes go through the training services, reads through the training selectors scoped to the user;
another user's answer, signal or memory item is a 404 like a missing one. Bad input comes back as
the same form with a message and everything typed kept, with status 422 (which HTMX swaps in)."""

import uuid

from django import forms
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db import transaction
from django.http import HttpResponse, QueryDict
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from apps.conversations import selectors, services
from apps.conversations.models import Message
from apps.conversations.views import message_context
from apps.training import selectors as training_selectors
from apps.training import services as training_services
from apps.training.models import PreferenceEvent
from liminal.errors import Invalid

EVENTS_PER_PAGE = 50
COMMENT_MAX = 4000
CORRECTION_MAX = 32000
# The Feedback page's filters: event kind (empty: all) -> label.
FEEDBACK_FILTERS = {
    "": "All",
    PreferenceEvent.Kind.CORRECTION: "Corrections",
    PreferenceEvent.Kind.THUMBS_DOWN: "Thumbs down",
    PreferenceEvent.Kind.THUMBS_UP: "Thumbs up",
    PreferenceEvent.Kind.PICK: "Kept answers",
}
INVALID_INPUT = 422


class FeedbackForm(forms.Form):
    reasons = forms.MultipleChoiceField(
        choices=[(reason, reason.capitalize()) for reason in training_services.REASONS],
        required=False,
        label="Reasons",
        error_messages={"invalid_choice": "Choose reasons from the list (%(value)s is not one of them)."},
    )
    comment = forms.CharField(required=False, max_length=COMMENT_MAX, label="Comment")
    correction = forms.CharField(required=False, max_length=CORRECTION_MAX, label="Better answer")


def _first_error(form) -> str:
    field, errors = next(iter(form.errors.items()))
    return f"{form.fields[field].label}: {errors[0]}" if field in form.fields else errors[0]


def _text_error(exc: Invalid) -> str:
    return (exc.details or {}).get("text", [exc.message])[0]


def _rateable(message: Message) -> bool:
    return message.role == Message.Role.ASSISTANT and message.status == Message.Status.COMPLETE


def _feedback_form_context(data: QueryDict | None = None, error: str = "") -> dict:
    """The form's context: empty, or as posted (`data`) with what was wrong with it."""
    data = data if data is not None else QueryDict()
    return {
        "feedback_form": {
            "reasons": FeedbackForm.base_fields["reasons"].choices,
            "chosen": data.getlist("reasons"),
            "comment": data.get("comment", ""),
            "correction": data.get("correction", ""),
            "error": error,
            "comment_max": COMMENT_MAX,
            "correction_max": CORRECTION_MAX,
        }
    }


# ---------------------------------------------------------------- on an answer


@login_required
@require_http_methods(["GET", "POST"])
def message_feedback(request, message_id):
    """GET: the form, opened under the answer by its thumbs down. POST: record it, re-render the answer."""
    message = selectors.message_get(actor=request.user, message_id=message_id)
    if not _rateable(message):
        return HttpResponse("Only finished answers can be rated.", status=400)
    if request.method == "GET":
        return render(request, "conversations/_feedback_form.html", {"m": message, **_feedback_form_context()})
    form = FeedbackForm(request.POST)
    if not form.is_valid():
        return _answer_with_form(request, message, _first_error(form))
    correction = form.cleaned_data["correction"]
    try:
        with transaction.atomic():
            if correction:
                # The better answer is this answer's judgement now, replacing any thumb given before.
                services.message_thumb(actor=request.user, message=message, kind=None)
            training_services.feedback_record(
                actor=request.user,
                message=message,
                feedback="negative",
                explicit_signal="correction" if correction else PreferenceEvent.Kind.THUMBS_DOWN,
                corrected_text=correction,
                notes=form.cleaned_data["comment"],
                reasons=form.cleaned_data["reasons"],
            )
    except Invalid as exc:
        return _answer_with_form(request, message, exc.message)
    return render(request, "conversations/_message.html", message_context(message, request.user))


def _answer_with_form(request, message, error):
    context = message_context(message, request.user, **_feedback_form_context(request.POST, error))
    return render(request, "conversations/_message.html", context, status=INVALID_INPUT)


@login_required
@require_POST
def message_keep(request, message_id):
    """After regenerating: keep this answer over the sibling the user compared it with."""
    chosen = selectors.message_get(actor=request.user, message_id=message_id)
    if not _rateable(chosen):
        return HttpResponse("Only finished answers can be kept.", status=400)
    try:
        rejected_id = uuid.UUID(request.POST.get("rejected", ""))
    except ValueError:
        return HttpResponse("Say which answer this one is better than.", status=400)
    rejected = selectors.message_get(actor=request.user, message_id=rejected_id)
    try:
        training_services.pick_record(actor=request.user, chosen=chosen, rejected=rejected)
    except Invalid:
        return HttpResponse("Only another answer to the same message can be compared.", status=400)
    return render(request, "conversations/_message.html", message_context(chosen, request.user))


# ---------------------------------------------------------------- the Feedback page


@login_required
@require_GET
def feedback_page(request):
    kind = request.GET.get("kind", "")
    if kind not in FEEDBACK_FILTERS:
        kind = ""
    events = training_selectors.events_list(actor=request.user, kind=kind or None)
    page = Paginator(events, EVENTS_PER_PAGE).get_page(request.GET.get("page"))
    return render(
        request,
        "feedback/index.html",
        {"page": page, "events": page.object_list, "kind": kind, "filters": FEEDBACK_FILTERS.items()},
    )


@login_required
@require_POST
def feedback_delete(request, event_id):
    """Forget one signal: gone from the list, and from every dataset built from now on."""
    event = training_selectors.event_get(actor=request.user, event_id=event_id)
    training_services.event_forget(actor=request.user, event=event)
    if request.htmx:
        return HttpResponse("")
    return redirect("feedback")


# ---------------------------------------------------------------- the Memory page


def _memory_items(user):
    return training_selectors.memory_list(actor=user).select_related("source_message")


def _memory_page(request, *, add_text: str = "", add_error: str = "", status: int = 200):
    return render(
        request,
        "memory/index.html",
        {"items": _memory_items(request.user), "add_text": add_text, "add_error": add_error},
        status=status,
    )


def _memory_list(request):
    return render(request, "memory/_list.html", {"items": _memory_items(request.user)})


@login_required
@require_GET
def memory_page(request):
    return _memory_page(request)


@login_required
@require_POST
def memory_add(request):
    text = request.POST.get("text", "")
    pinned = request.POST.get("pinned") == "1"
    try:
        training_services.memory_remember(actor=request.user, text=text, pinned=pinned)
    except Invalid as exc:
        error = _text_error(exc)
        if request.htmx:
            context = {"add_text": text, "add_error": error, "pinned": pinned}
            return render(request, "memory/_add_form.html", context, status=INVALID_INPUT)
        return _memory_page(request, add_text=text, add_error=error, status=INVALID_INPUT)
    if request.htmx:
        # A fresh form, and the list out of band.
        return render(request, "memory/_add_form.html", {"items": _memory_items(request.user), "list_oob": True})
    return redirect("memory")


@login_required
@require_POST
def memory_pin(request, item_id):
    item = training_selectors.memory_get(actor=request.user, item_id=item_id)
    training_services.memory_update(actor=request.user, item=item, pinned=request.POST.get("pinned") == "1")
    return _memory_list(request) if request.htmx else redirect("memory")


@login_required
@require_http_methods(["GET", "POST"])
def memory_edit(request, item_id):
    """GET: the item as an inline form. POST: save the new text, show the item again."""
    item = training_selectors.memory_get(actor=request.user, item_id=item_id)
    if request.method == "GET":
        return render(request, "memory/_edit_form.html", {"item": item, "text": item.text})
    text = request.POST.get("text", "")
    try:
        training_services.memory_update(actor=request.user, item=item, text=text)
    except Invalid as exc:
        context = {"item": item, "text": text, "error": _text_error(exc)}
        return render(request, "memory/_edit_form.html", context, status=INVALID_INPUT)
    return render(request, "memory/_item.html", {"item": item}) if request.htmx else redirect("memory")


@login_required
@require_GET
def memory_item(request, item_id):
    """One item as listed, for an edit's Cancel."""
    return render(
        request, "memory/_item.html", {"item": training_selectors.memory_get(actor=request.user, item_id=item_id)}
    )


@login_required
@require_POST
def memory_delete(request, item_id):
    item = training_selectors.memory_get(actor=request.user, item_id=item_id)
    training_services.memory_forget(actor=request.user, item=item)
    return _memory_list(request) if request.htmx else redirect("memory")
