from django.urls import include, path

from apps.accounts import views

account_patterns = (
    [
        path("signup/", views.signup, name="signup"),
        path("login/", views.login, name="login"),
        path("login/mfa/", views.login_mfa, name="login-mfa"),
        path("logout/", views.logout, name="logout"),
        path("settings/", views.settings_page, name="settings"),
        path("profile/", views.profile, name="profile"),
        path("security/", views.security, name="security"),
        path("sessions/", views.sessions, name="sessions"),
        path("password-reset/", views.password_reset, name="password-reset"),
        path("password-reset/confirm/", views.password_reset_confirm, name="password-reset-confirm"),
        path("verify-email/", views.verify_email, name="verify-email"),
    ],
    "accounts",
)

urlpatterns = [
    path("accounts/", include(account_patterns)),
]
