from django.urls import include, path

from apps.accounts import views

account_patterns = (
    [
        path("signup/", views.signup, name="signup"),
        path("login/", views.login, name="login"),
        path("logout/", views.logout, name="logout"),
    ],
    "accounts",
)

urlpatterns = [
    path("accounts/", include(account_patterns)),
    path("", views.home, name="home"),
]
