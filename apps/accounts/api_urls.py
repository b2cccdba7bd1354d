from django.urls import path

from apps.accounts import api

urlpatterns = [
    path("auth/signup", api.SignupApi.as_view(), name="api-signup"),
    path("auth/login", api.LoginApi.as_view(), name="api-login"),
    path("auth/refresh", api.RefreshApi.as_view(), name="api-refresh"),
    path("auth/logout", api.LogoutApi.as_view(), name="api-logout"),
    path("auth/sessions", api.SessionListApi.as_view(), name="api-sessions"),
    path("auth/sessions/<uuid:session_id>", api.SessionDetailApi.as_view(), name="api-session-detail"),
    path("auth/mfa/request", api.MfaRequestApi.as_view(), name="api-mfa-request"),
    path("auth/mfa/verify", api.MfaVerifyApi.as_view(), name="api-mfa-verify"),
    path("auth/mfa/status", api.MfaStatusApi.as_view(), name="api-mfa-status"),
    path("auth/mfa/disable", api.MfaDisableApi.as_view(), name="api-mfa-disable"),
    path("auth/reset/request", api.PasswordResetRequestApi.as_view(), name="api-reset-request"),
    path("auth/reset/confirm", api.PasswordResetConfirmApi.as_view(), name="api-reset-confirm"),
    path("auth/verify_email", api.VerifyEmailApi.as_view(), name="api-verify-email"),
    path("me", api.MeApi.as_view(), name="api-me"),
    path("me/email", api.EmailChangeApi.as_view(), name="api-me-email"),
    path("me/password", api.PasswordChangeApi.as_view(), name="api-me-password"),
    path("api-keys", api.ApiKeyListApi.as_view(), name="api-keys"),
    path("api-keys/<uuid:key_id>", api.ApiKeyDetailApi.as_view(), name="api-key-detail"),
    path("admin/settings", api.AdminSettingsApi.as_view(), name="api-admin-settings"),
]
