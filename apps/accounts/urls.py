from django.urls import include, path

from apps.accounts import views

account_patterns = (
    [
        path("signup/", views.signup, name="signup"),
        path("login/", views.login, name="login"),
        path("logout/", views.logout, name="logout"),
        path("settings/", views.settings_page, name="settings"),
    ],
    "accounts",
)

urlpatterns = [
    path("accounts/", include(account_patterns)),
]
