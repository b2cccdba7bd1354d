from rest_framework import serializers

from apps.knowledge.models import Chunk, Context, KnowledgeFile, KnowledgeGap


class FileOutput(serializers.ModelSerializer):
    file_id = serializers.UUIDField(source="id")
    progress = serializers.SerializerMethodField()
    error = serializers.SerializerMethodField()

    class Meta:
        model = KnowledgeFile
        fields = [
            "id",
            "file_id",
            "name",
            "folder",
            "kind",
            "content_type",
            "size_bytes",
            "sha256",
            "status",
            "phase",
            "progress",
            "error",
            "title",
            "page_count",
            "encoder_id",
            "created_at",
            "ingested_at",
        ]

    def get_progress(self, file) -> dict:
        return {"chunks_done": file.chunks_done, "chunks_total": file.chunks_total, "percent": file.progress_percent}

    def get_error(self, file) -> dict | None:
        if file.status != KnowledgeFile.Status.FAILED:
            return None
        return {"code": file.error_code, "message": file.error_message}


class ContextOutput(serializers.ModelSerializer):
    context_id = serializers.UUIDField(source="id")
    file_count = serializers.SerializerMethodField()
    folders = serializers.SerializerMethodField()

    class Meta:
        model = Context
        fields = ["id", "context_id", "name", "description", "file_count", "folders", "created_at", "updated_at"]

    def get_file_count(self, context) -> int:
        count = getattr(context, "file_count", None)
        return count if count is not None else context.file_links.count()

    def get_folders(self, context) -> list[str]:
        return [folder.path for folder in context.folders.all()]


class ContextDetailOutput(ContextOutput):
    files = serializers.SerializerMethodField()

    class Meta(ContextOutput.Meta):
        fields = [*ContextOutput.Meta.fields, "files"]

    def get_files(self, context) -> list[dict]:
        return FileOutput([link.file for link in context.file_links.all()], many=True).data


class ChunkOutput(serializers.ModelSerializer):
    chunk_id = serializers.IntegerField(source="id")
    file_id = serializers.UUIDField()
    file_name = serializers.CharField(source="file.name")
    # The seed system's clients read `content`; `text` stays for this system's own.
    content = serializers.CharField(source="text")

    class Meta:
        model = Chunk
        fields = [
            "id",
            "chunk_id",
            "file_id",
            "file_name",
            "ordinal",
            "content",
            "text",
            "heading",
            "location",
            "token_count",
            "page_start",
            "page_end",
            "line_start",
            "line_end",
            "char_start",
            "char_end",
            "encoder_id",
            "embedding_dim",
        ]


class GapOutput(serializers.ModelSerializer):
    gap_id = serializers.UUIDField(source="id")
    context_ids = serializers.SerializerMethodField()

    class Meta:
        model = KnowledgeGap
        fields = ["id", "gap_id", "query", "context_ids", "conversation_id", "best_score", "created_at", "resolved_at"]

    def get_context_ids(self, gap) -> list[str]:
        return [str(context.pk) for context in gap.contexts.all()]


class ContextInput(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    description = serializers.CharField(required=False, allow_blank=True, max_length=5000, default="")
    file_ids = serializers.ListField(child=serializers.UUIDField(), required=False, default=list, max_length=1000)
    folders = serializers.ListField(
        child=serializers.CharField(max_length=255), required=False, default=list, max_length=100
    )


class ContextUpdateInput(serializers.Serializer):
    name = serializers.CharField(max_length=200, required=False)
    description = serializers.CharField(required=False, allow_blank=True, max_length=5000)


class FileUpdateInput(serializers.Serializer):
    folder = serializers.CharField(max_length=255, allow_blank=True)


class ContextFileInput(serializers.Serializer):
    file_id = serializers.UUIDField()


class ContextFolderInput(serializers.Serializer):
    path = serializers.CharField(max_length=255)


class PageInput(serializers.Serializer):
    limit = serializers.IntegerField(min_value=1, max_value=200, default=50)
    offset = serializers.IntegerField(min_value=0, default=0)


class SearchInput(serializers.Serializer):
    q = serializers.CharField(max_length=2000)
    k = serializers.IntegerField(min_value=1, max_value=50, required=False)
