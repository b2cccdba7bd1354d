from django.urls import path

from apps.knowledge import api

urlpatterns = [
    path("files/upload", api.FileUploadApi.as_view(), name="api-file-upload"),
    path("files/limits", api.FileLimitsApi.as_view(), name="api-file-limits"),
    path("files", api.FileListApi.as_view(), name="api-files"),
    path("files/<uuid:file_id>", api.FileDetailApi.as_view(), name="api-file-detail"),
    path("files/<uuid:file_id>/reingest", api.FileReingestApi.as_view(), name="api-file-reingest"),
    path("files/<uuid:file_id>/chunks", api.FileChunksApi.as_view(), name="api-file-chunks"),
    path("chunks/<int:chunk_id>", api.ChunkDetailApi.as_view(), name="api-chunk-detail"),
    path("contexts", api.ContextListApi.as_view(), name="api-contexts"),
    path("contexts/<uuid:context_id>", api.ContextDetailApi.as_view(), name="api-context-detail"),
    path("contexts/<uuid:context_id>/files", api.ContextFilesApi.as_view(), name="api-context-files"),
    path(
        "contexts/<uuid:context_id>/files/<uuid:file_id>",
        api.ContextFileDetailApi.as_view(),
        name="api-context-file-detail",
    ),
    path("contexts/<uuid:context_id>/folders", api.ContextFoldersApi.as_view(), name="api-context-folders"),
    path("contexts/<uuid:context_id>/chunks", api.ContextChunksApi.as_view(), name="api-context-chunks"),
    path("contexts/<uuid:context_id>/search", api.ContextSearchApi.as_view(), name="api-context-search"),
    path("knowledge/gaps", api.GapListApi.as_view(), name="api-knowledge-gaps"),
    path("knowledge/gaps/<uuid:gap_id>/resolve", api.GapResolveApi.as_view(), name="api-knowledge-gap-resolve"),
]
