from django.urls import path

from apps.configops import views

app_name = "configops"

urlpatterns = [
    path("", views.index, name="index"),
    path("patches/<uuid:patch_id>/", views.patch_detail, name="patch"),
    path("patches/<uuid:patch_id>/decide", views.patch_decide, name="patch-decide"),
    path("patches/<uuid:patch_id>/apply", views.patch_apply, name="patch-apply"),
    path("patches/<uuid:patch_id>/rollback", views.patch_rollback, name="patch-rollback"),
    path("artifacts/<uuid:artifact_id>/", views.artifact_history, name="artifact"),
    path("artifacts/<uuid:artifact_id>/restore", views.artifact_restore, name="artifact-restore"),
    path("artifacts/<uuid:artifact_id>/architect", views.artifact_architect, name="artifact-architect"),
]
