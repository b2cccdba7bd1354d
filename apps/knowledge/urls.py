from django.urls import path

from apps.knowledge import views

app_name = "knowledge"

urlpatterns = [
    path("", views.index, name="index"),
    path("files/table", views.file_table, name="file-table"),
    path("files/upload", views.file_upload, name="file-upload"),
    path("files/<uuid:file_id>/", views.file_detail, name="file"),
    path("files/<uuid:file_id>/status", views.file_status, name="file-status"),
    path("files/<uuid:file_id>/delete", views.file_delete, name="file-delete"),
    path("files/<uuid:file_id>/reingest", views.file_reingest, name="file-reingest"),
    path("contexts/new", views.context_create, name="context-create"),
    path("contexts/<uuid:context_id>/", views.context_detail, name="context"),
    path("contexts/<uuid:context_id>/update", views.context_update, name="context-update"),
    path("contexts/<uuid:context_id>/delete", views.context_delete, name="context-delete"),
    path("contexts/<uuid:context_id>/add", views.context_add, name="context-add"),
    path("contexts/<uuid:context_id>/remove", views.context_remove, name="context-remove"),
    path("contexts/<uuid:context_id>/search", views.context_search, name="context-search"),
    path("chunks/<int:chunk_id>/", views.chunk_detail, name="chunk"),
    path("gaps/", views.gaps, name="gaps"),
    path("gaps/<uuid:gap_id>/resolve", views.gap_resolve, name="gap-resolve"),
]
