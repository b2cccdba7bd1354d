from django.urls import path

from apps.configops import api

urlpatterns = [
    path("config/propose_patch", api.ProposePatchApi.as_view(), name="api-config-propose"),
    path("config/patches", api.PatchListApi.as_view(), name="api-config-patches"),
    path("config/patches/<uuid:patch_id>", api.PatchDetailApi.as_view(), name="api-config-patch"),
    path("config/patches/<uuid:patch_id>/decide", api.PatchDecideApi.as_view(), name="api-config-patch-decide"),
    path("config/patches/<uuid:patch_id>/apply", api.PatchApplyApi.as_view(), name="api-config-patch-apply"),
    path("config/patches/<uuid:patch_id>/rollback", api.PatchRollbackApi.as_view(), name="api-config-patch-rollback"),
    path("config/apply", api.ApplyApi.as_view(), name="api-config-apply"),
    path("config/auto_patch", api.AutoPatchApi.as_view(), name="api-config-auto-patch"),
]
