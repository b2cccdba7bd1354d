from django.contrib import admin

from apps.knowledge import services
from apps.knowledge.models import (
    Chunk,
    Context,
    ContextFile,
    ContextFolder,
    KnowledgeFile,
    KnowledgeGap,
    RetrievalConfig,
)


class ContextFileInline(admin.TabularInline):
    model = ContextFile
    extra = 0
    raw_id_fields = ("file",)


class ContextFolderInline(admin.TabularInline):
    model = ContextFolder
    extra = 0


@admin.register(KnowledgeFile)
class KnowledgeFileAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "owner",
        "folder",
        "kind",
        "size_bytes",
        "status",
        "chunks_done",
        "chunks_total",
        "created_at",
    )
    list_filter = ("status", "kind")
    search_fields = ("name", "owner__email", "sha256")
    raw_id_fields = ("owner",)
    readonly_fields = (
        "storage_path",
        "size_bytes",
        "sha256",
        "kind",
        "status",
        "phase",
        "chunks_total",
        "chunks_done",
        "error_code",
        "error_message",
        "attempts",
        "title",
        "page_count",
        "encoder_id",
        "chunking_version",
        "created_at",
        "updated_at",
        "ingest_started_at",
        "ingested_at",
    )
    actions = ["reingest"]

    @admin.action(description="Re-ingest the selected files")
    def reingest(self, request, queryset):
        for file in queryset:
            services.file_reingest(file=file)
        self.message_user(request, f"Queued {queryset.count()} file(s) for ingestion.")

    def delete_model(self, request, obj):
        services.file_delete(file=obj)

    def delete_queryset(self, request, queryset):
        for file in queryset:
            services.file_delete(file=file)


@admin.register(Context)
class ContextAdmin(admin.ModelAdmin):
    list_display = ("name", "owner", "created_at", "updated_at")
    search_fields = ("name", "owner__email")
    raw_id_fields = ("owner",)
    inlines = [ContextFileInline, ContextFolderInline]


@admin.register(Chunk)
class ChunkAdmin(admin.ModelAdmin):
    list_display = ("id", "file", "ordinal", "location", "token_count", "encoder_id")
    list_filter = ("encoder_id",)
    search_fields = ("file__name", "owner__email")
    raw_id_fields = ("owner", "file")
    exclude = ("embedding",)
    readonly_fields = (
        "owner",
        "file",
        "ordinal",
        "text",
        "heading",
        "token_count",
        "char_start",
        "char_end",
        "page_start",
        "page_end",
        "line_start",
        "line_end",
        "location",
        "content_sha256",
        "encoder_id",
        "embedding_dim",
        "created_at",
    )

    def has_add_permission(self, request):
        return False


@admin.register(RetrievalConfig)
class RetrievalConfigAdmin(admin.ModelAdmin):
    list_display = (
        "__str__",
        "min_similarity",
        "fulltext_min_similarity",
        "rrf_k",
        "candidates",
        "ef_search",
        "default_k",
    )

    def has_add_permission(self, request):
        return not RetrievalConfig.objects.exists()

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(KnowledgeGap)
class KnowledgeGapAdmin(admin.ModelAdmin):
    list_display = ("query", "owner", "best_score", "conversation_id", "created_at", "resolved_at")
    list_filter = ("resolved_at",)
    search_fields = ("query", "owner__email")
    raw_id_fields = ("owner",)
    filter_horizontal = ("contexts",)
