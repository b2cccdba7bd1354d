from django.contrib import admin
from django.urls import include, path

from liminal import health
from liminal.health import healthz
from liminal.openapi import SchemaView

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("admin/", admin.site.urls),
    path("v1/schema", SchemaView.as_view(), name="api-schema"),
    path("v1/", include("apps.accounts.api_urls")),
    path("v1/", include("apps.knowledge.api_urls")),
    path("v1/", include("apps.artifacts.api_urls")),
    path("v1/", include("apps.conversations.api_urls")),
    path("v1/", include("apps.training.api_urls")),
    path("v1/", include("apps.configops.api_urls")),
    path("knowledge/", include("apps.knowledge.urls")),
    path("config/", include("apps.configops.urls")),
    path("", include("apps.training.urls")),
    path("", include("apps.router.urls")),
    path("", include("apps.conversations.urls")),
    path("", include("apps.accounts.urls")),
]
