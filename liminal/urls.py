from django.contrib import admin
from django.urls import include, path

from liminal.health import healthz

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("v1/", include("apps.accounts.api_urls")),
    path("", include("apps.accounts.urls")),
]
