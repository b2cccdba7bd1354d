"""The /v1 knowledge API (liminallm-compatible): files, contexts, chunks, search, gaps."""

from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.knowledge import selectors, services
from apps.knowledge.filenames import InvalidFileName
from apps.knowledge.serializers import (
    ChunkOutput,
    ContextDetailOutput,
    ContextFileInput,
    ContextFolderInput,
    ContextInput,
    ContextOutput,
    ContextUpdateInput,
    FileOutput,
    FileUpdateInput,
    GapOutput,
    PageInput,
    SearchInput,
)
from apps.knowledge.uploads import UploadParser, install_upload_limits
from liminal.api import ApiError


def _valid(serializer_class, data):
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def _file_or_404(request, file_id):
    file = selectors.file_get(actor=request.user, file_id=file_id)
    if file is None:
        raise exceptions.NotFound("File not found.")
    return file


def _context_or_404(request, context_id):
    context = selectors.context_get(actor=request.user, context_id=context_id)
    if context is None:
        raise exceptions.NotFound("Context not found.")
    return context


def _chunk_page(chunks, page) -> dict:
    items = chunks[page["offset"] : page["offset"] + page["limit"]]
    return {"items": ChunkOutput(items, many=True).data, "total": chunks.count(), **page}


def _context_detail(request, context_id) -> dict:
    return ContextDetailOutput(_context_or_404(request, context_id)).data


class FileUploadApi(APIView):
    """multipart/form-data: `file` (one file), optional `folder`, optional `context_id` (repeatable)."""

    parser_classes = [UploadParser]

    def post(self, request):
        install_upload_limits(request)
        uploads = request.FILES.getlist("file")
        sent_names = getattr(request, "sent_file_names", [])
        if not uploads:
            if sent_names:  # Django dropped the file because its name was unusable
                raise InvalidFileName(f"“{sent_names[0]}” is not a usable file name.")
            raise ApiError(400, "validation_error", "file: No file was uploaded.", {"file": ["No file was uploaded."]})
        if len(uploads) > 1 or len(sent_names) > 1:
            raise ApiError(400, "validation_error", "file: Upload one file per request.", {"file": ["One file only."]})
        upload = uploads[0]
        context_ids = [*request.data.getlist("context_id"), *request.data.getlist("context_ids")]
        file = services.file_upload(
            actor=request.user,
            name=getattr(upload, "sent_name", upload.name),
            content=upload.read(),
            folder=request.data.get("folder", ""),
            content_type=upload.content_type or "",
            context_ids=[context_id for context_id in context_ids if context_id],
        )
        return Response(FileOutput(file).data, status=status.HTTP_201_CREATED)


class FileLimitsApi(APIView):
    def get(self, request):
        return Response(selectors.file_limits())


class FileListApi(APIView):
    def get(self, request):
        context = None
        if request.query_params.get("context_id"):
            context = _context_or_404(request, request.query_params["context_id"])
        files = selectors.file_list(actor=request.user, context=context, folder=request.query_params.get("folder"))
        return Response({"items": FileOutput(files, many=True).data})


class FileDetailApi(APIView):
    def get(self, request, file_id):
        return Response(FileOutput(_file_or_404(request, file_id)).data)

    @extend_schema(request=FileUpdateInput)
    def patch(self, request, file_id):
        file = _file_or_404(request, file_id)
        folder = _valid(FileUpdateInput, request.data)["folder"]
        return Response(FileOutput(services.file_move(file=file, folder=folder)).data)

    def delete(self, request, file_id):
        file = _file_or_404(request, file_id)
        services.file_delete(file=file)
        return Response({"deleted": True, "file_id": str(file_id)})


class FileReingestApi(APIView):
    def post(self, request, file_id):
        file = services.file_reingest(file=_file_or_404(request, file_id))
        return Response(FileOutput(file).data, status=status.HTTP_202_ACCEPTED)


class FileChunksApi(APIView):
    def get(self, request, file_id):
        file = _file_or_404(request, file_id)
        page = _valid(PageInput, request.query_params)
        return Response(_chunk_page(selectors.file_chunks(actor=request.user, file=file), page))


class ChunkDetailApi(APIView):
    """One passage, as a citation links to it."""

    def get(self, request, chunk_id):
        chunk = selectors.chunk_get(actor=request.user, chunk_id=chunk_id)
        if chunk is None:
            raise exceptions.NotFound("Chunk not found.")
        return Response(ChunkOutput(chunk).data)


class ContextListApi(APIView):
    def get(self, request):
        contexts = selectors.context_list(actor=request.user).prefetch_related("folders")
        return Response({"items": ContextOutput(contexts, many=True).data})

    @extend_schema(request=ContextInput)
    def post(self, request):
        data = _valid(ContextInput, request.data)
        context = services.context_create(actor=request.user, **data)
        return Response(_context_detail(request, context.pk), status=status.HTTP_201_CREATED)


class ContextDetailApi(APIView):
    def get(self, request, context_id):
        return Response(_context_detail(request, context_id))

    @extend_schema(request=ContextUpdateInput)
    def patch(self, request, context_id):
        context = _context_or_404(request, context_id)
        services.context_update(context=context, **_valid(ContextUpdateInput, request.data))
        return Response(_context_detail(request, context_id))

    def delete(self, request, context_id):
        services.context_delete(context=_context_or_404(request, context_id))
        return Response({"deleted": True, "context_id": str(context_id)})


class ContextFilesApi(APIView):
    @extend_schema(request=ContextFileInput)
    def post(self, request, context_id):
        context = _context_or_404(request, context_id)
        file = _file_or_404(request, _valid(ContextFileInput, request.data)["file_id"])
        services.context_file_add(context=context, file=file)
        return Response(_context_detail(request, context_id))


class ContextFileDetailApi(APIView):
    def delete(self, request, context_id, file_id):
        context = _context_or_404(request, context_id)
        if not services.context_file_remove(context=context, file=_file_or_404(request, file_id)):
            raise exceptions.NotFound("That file is not in this context.")
        return Response(_context_detail(request, context_id))


class ContextFoldersApi(APIView):
    @extend_schema(request=ContextFolderInput)
    def post(self, request, context_id):
        context = _context_or_404(request, context_id)
        services.context_folder_add(context=context, path=_valid(ContextFolderInput, request.data)["path"])
        return Response(_context_detail(request, context_id))

    def delete(self, request, context_id):
        context = _context_or_404(request, context_id)
        path = _valid(ContextFolderInput, request.data or request.query_params)["path"]
        if not services.context_folder_remove(context=context, path=path):
            raise exceptions.NotFound("That folder is not in this context.")
        return Response(_context_detail(request, context_id))


class ContextChunksApi(APIView):
    def get(self, request, context_id):
        context = _context_or_404(request, context_id)
        page = _valid(PageInput, request.query_params)
        return Response(_chunk_page(selectors.context_chunks(actor=request.user, context=context), page))


class ContextSearchApi(APIView):
    """Hybrid retrieval over one context: what a grounded chat would cite for this question."""

    def get(self, request, context_id):
        context = _context_or_404(request, context_id)
        data = _valid(SearchInput, request.query_params)
        result = selectors.retrieve(actor=request.user, context_ids=[context.pk], query=data["q"], k=data.get("k"))
        return Response(
            {
                "query": data["q"],
                "found": result.found,
                "best_similarity": result.best_similarity,
                "min_similarity": result.min_similarity,
                "items": [chunk.as_dict() for chunk in result.chunks],
                "timings_ms": result.timings_ms,
            }
        )


class GapListApi(APIView):
    def get(self, request):
        include_resolved = request.query_params.get("include_resolved") in {"1", "true", "yes"}
        gaps = selectors.knowledge_gap_list(actor=request.user, include_resolved=include_resolved)
        return Response({"items": GapOutput(gaps, many=True).data})


class GapResolveApi(APIView):
    def post(self, request, gap_id):
        gap = selectors.knowledge_gap_get(actor=request.user, gap_id=gap_id)
        if gap is None:
            raise exceptions.NotFound("Knowledge gap not found.")
        return Response(GapOutput(services.knowledge_gap_resolve(gap=gap)).data)
