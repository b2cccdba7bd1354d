from django.urls import path

from apps.accounts import api

urlpatterns = [
    path("auth/signup", api.SignupApi.as_view(), name="api-signup"),
    path("auth/login", api.LoginApi.as_view(), name="api-login"),
    path("auth/refresh", api.RefreshApi.as_view(), name="api-refresh"),
    path("auth/logout", api.LogoutApi.as_view(), name="api-logout"),
    path("auth/sessions", api.SessionListApi.as_view(), name="api-sessions"),
    path("auth/sessions/<uuid:session_id>", api.SessionDetailApi.as_view(), name="api-session-detail"),
    path("me", api.MeApi.as_view(), name="api-me"),
    path("api-keys", api.ApiKeyListApi.as_view(), name="api-keys"),
    path("api-keys/<uuid:key_id>", api.ApiKeyDetailApi.as_view(), name="api-key-detail"),
    path("admin/settings", api.AdminSettingsApi.as_view(), name="api-admin-settings"),
]
