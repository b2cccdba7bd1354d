"""Server-rendered knowledge pages: files with live ingestion progress, contexts, search, gaps."""

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from apps.knowledge import selectors, services
from apps.knowledge.models import KnowledgeFile
from apps.knowledge.uploads import check_declared_size
from liminal.api import ApiError

CHUNKS_PER_PAGE = 25


class UploadForm(forms.Form):
    file = forms.FileField()
    folder = forms.CharField(max_length=255, required=False)
    contexts = forms.MultipleChoiceField(required=False)

    def __init__(self, *args, context_choices=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["contexts"].choices = context_choices


class ContextForm(forms.Form):
    name = forms.CharField(max_length=200)
    description = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False, max_length=5000)


def _context_choices(user):
    return [(str(context.pk), context.name) for context in selectors.context_list(actor=user)]


def _sidebar(request) -> dict:
    return {"contexts": selectors.context_list(actor=request.user)}


def _files_context(user) -> dict:
    files = list(selectors.file_list(actor=user))
    return {"files": files, "any_pending": any(file.is_pending for file in files)}


def _index(request, upload_form=None, context_form=None, status=200):
    user = request.user
    return render(
        request,
        "knowledge/index.html",
        {
            "upload_form": upload_form or UploadForm(context_choices=_context_choices(user)),
            "context_form": context_form or ContextForm(),
            **_sidebar(request),
            "limits": selectors.file_limits(),
            "open_gaps": selectors.knowledge_gap_list(actor=user).count(),
            **_files_context(user),
        },
        status=status,
    )


@login_required
@require_GET
def index(request):
    return _index(request)


@login_required
@require_GET
def file_table(request):
    """The file table alone; the page polls it while any file is still being ingested."""
    return render(request, "knowledge/_file_table.html", _files_context(request.user))


@login_required
@require_POST
def file_upload(request):
    user = request.user
    try:
        check_declared_size(request.META)
    except ApiError as exc:
        messages.error(request, str(exc.detail))
        return _index(request, status=exc.status_code)
    form = UploadForm(request.POST, request.FILES, context_choices=_context_choices(user))
    if not form.is_valid():
        return _index(request, upload_form=form, status=400)
    upload = form.cleaned_data["file"]
    try:
        if upload.size > settings.MAX_UPLOAD_BYTES:
            raise services.UploadTooLarge(upload.size)
        file = services.file_upload(
            actor=user,
            name=upload.name,
            content=upload.read(),
            folder=form.cleaned_data["folder"],
            content_type=upload.content_type or "",
            context_ids=form.cleaned_data["contexts"],
        )
    except ApiError as exc:
        form.add_error("file", str(exc.detail))
        return _index(request, upload_form=form, status=exc.status_code)
    messages.success(request, f"Uploaded “{file.name}”; it is being read and indexed.")
    return redirect("knowledge:index")


def _own_file(request, file_id) -> KnowledgeFile:
    file = selectors.file_get(actor=request.user, file_id=file_id)
    if file is None:
        raise Http404("File not found.")
    return file


@login_required
@require_GET
def file_detail(request, file_id):
    file = _own_file(request, file_id)
    page = Paginator(selectors.file_chunks(actor=request.user, file=file), CHUNKS_PER_PAGE).get_page(
        request.GET.get("page")
    )
    return render(
        request,
        "knowledge/file_detail.html",
        {"file": file, "page": page, "file_contexts": file.contexts.filter(owner=request.user), **_sidebar(request)},
    )


@login_required
@require_GET
def file_status(request, file_id):
    return render(request, "knowledge/_file_status.html", {"file": _own_file(request, file_id), "poll": True})


@login_required
@require_POST
def file_delete(request, file_id):
    file = _own_file(request, file_id)
    services.file_delete(file=file)
    if request.htmx:
        return render(request, "knowledge/_file_table.html", _files_context(request.user))
    messages.success(request, f"Deleted “{file.name}”.")
    return redirect("knowledge:index")


@login_required
@require_POST
def file_reingest(request, file_id):
    services.file_reingest(file=_own_file(request, file_id))
    if request.htmx:
        return render(request, "knowledge/_file_table.html", _files_context(request.user))
    return redirect("knowledge:index")


@login_required
@require_POST
def context_create(request):
    form = ContextForm(request.POST)
    if not form.is_valid():
        return _index(request, context_form=form, status=400)
    try:
        context = services.context_create(actor=request.user, **form.cleaned_data)
    except ApiError as exc:
        form.add_error("name", str(exc.detail))
        return _index(request, context_form=form, status=exc.status_code)
    return redirect("knowledge:context", context_id=context.pk)


def _own_context(request, context_id):
    context = selectors.context_get(actor=request.user, context_id=context_id)
    if context is None:
        raise Http404("Context not found.")
    return context


def _context_page(request, context, form=None, status=200):
    member_ids = {link.file_id for link in context.file_links.all()}
    return render(
        request,
        "knowledge/context_detail.html",
        {
            "context": context,
            "form": form or ContextForm(initial={"name": context.name, "description": context.description}),
            "scope_files": selectors.file_list(actor=request.user, context=context),
            "addable_files": [f for f in selectors.file_list(actor=request.user) if f.pk not in member_ids],
            "folders": selectors.file_folders(actor=request.user),
            "chunk_total": selectors.context_chunks(actor=request.user, context=context).count(),
            **_sidebar(request),
        },
        status=status,
    )


@login_required
@require_GET
def context_detail(request, context_id):
    return _context_page(request, _own_context(request, context_id))


@login_required
@require_POST
def context_update(request, context_id):
    context = _own_context(request, context_id)
    form = ContextForm(request.POST)
    if not form.is_valid():
        return _context_page(request, context, form=form, status=400)
    try:
        services.context_update(context=context, **form.cleaned_data)
    except ApiError as exc:
        form.add_error("name", str(exc.detail))
        return _context_page(request, context, form=form, status=exc.status_code)
    return redirect("knowledge:context", context_id=context.pk)


@login_required
@require_POST
def context_delete(request, context_id):
    context = _own_context(request, context_id)
    services.context_delete(context=context)
    messages.success(request, f"Deleted the context “{context.name}”; its files are kept.")
    return redirect("knowledge:index")


@login_required
@require_POST
def context_add(request, context_id):
    context = _own_context(request, context_id)
    try:
        if request.POST.get("file_id"):
            services.context_file_add(context=context, file=_own_file(request, request.POST["file_id"]))
        elif request.POST.get("folder"):
            services.context_folder_add(context=context, path=request.POST["folder"])
    except ApiError as exc:
        messages.error(request, str(exc.detail))
    return redirect("knowledge:context", context_id=context.pk)


@login_required
@require_POST
def context_remove(request, context_id):
    context = _own_context(request, context_id)
    if request.POST.get("file_id"):
        services.context_file_remove(context=context, file=_own_file(request, request.POST["file_id"]))
    elif "folder" in request.POST:
        services.context_folder_remove(context=context, path=request.POST["folder"])
    return redirect("knowledge:context", context_id=context.pk)


@login_required
@require_GET
def context_search(request, context_id):
    context = _own_context(request, context_id)
    query = request.GET.get("q", "").strip()[:2000]
    result = selectors.retrieve(actor=request.user, context_ids=[context.pk], query=query) if query else None
    return render(request, "knowledge/_search_results.html", {"context": context, "query": query, "result": result})


@login_required
@require_GET
def chunk_detail(request, chunk_id):
    """One cited passage, for the chat UI's citation pop-over."""
    chunk = selectors.chunk_get(actor=request.user, chunk_id=chunk_id)
    if chunk is None:
        raise Http404("Passage not found.")
    return render(request, "knowledge/_chunk.html", {"chunk": chunk})


@login_required
@require_GET
def gaps(request):
    gap_list = selectors.knowledge_gap_list(actor=request.user, include_resolved=True)
    return render(request, "knowledge/gaps.html", {"gaps": gap_list, **_sidebar(request)})


@login_required
@require_POST
def gap_resolve(request, gap_id):
    gap = selectors.knowledge_gap_get(actor=request.user, gap_id=gap_id)
    if gap is None:
        raise Http404("Knowledge gap not found.")
    services.knowledge_gap_resolve(gap=gap)
    return redirect("knowledge:gaps")
