import pytest
from django.test import Client

from apps.accounts.models import User

pytestmark = pytest.mark.django_db


def test_home_requires_login(client):
    response = client.get("/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_signup_page_creates_account_and_logs_in(client):
    page = client.get("/accounts/signup/")
    assert page.status_code == 200 and b"csrfmiddlewaretoken" in page.content
    response = client.post(
        "/accounts/signup/", {"email": "eve@example.com", "password": "correct horse battery", "handle": "eve"}
    )
    assert response.status_code == 302
    home = client.get("/")
    assert home.status_code == 200 and b"eve" in home.content
    assert User.objects.filter(email="eve@example.com").exists()


def test_signup_page_shows_errors_and_keeps_nothing(client):
    response = client.post("/accounts/signup/", {"email": "eve@example.com", "password": "123"})
    assert response.status_code == 400
    assert b"too short" in response.content
    assert not User.objects.exists()


def test_login_and_logout_pages(client, make_user):
    user = make_user()
    bad = client.post("/accounts/login/", {"email": user.email, "password": "nope"})
    assert bad.status_code == 401 and b"Invalid email or password" in bad.content
    good = client.post("/accounts/login/?next=/admin/", {"email": user.email, "password": "correct horse battery"})
    assert good.status_code == 302 and good["Location"] == "/admin/"
    assert client.get("/").status_code == 200
    client.post("/accounts/logout/")
    assert client.get("/").status_code == 302


def test_login_ignores_offsite_next(client, make_user):
    user = make_user()
    response = client.post(
        "/accounts/login/?next=//evil.example/", {"email": user.email, "password": "correct horse battery"}
    )
    assert response["Location"] == "/"


def test_pages_enforce_csrf(make_user):
    client = Client(enforce_csrf_checks=True)
    response = client.post("/accounts/login/", {"email": "a@example.com", "password": "x"})
    assert response.status_code == 403


def test_admin_site_is_for_admins_only(client, make_user):
    client.force_login(make_user())
    assert client.get("/admin/").status_code == 302
    client.force_login(make_user(role=User.Role.ADMIN))
    assert client.get("/admin/accounts/user/").status_code == 200


def test_bootstrap_admin_command_creates_then_updates(capsys):
    from django.core.management import call_command

    call_command("bootstrap_admin", email="root@example.com", password="a much better password")
    user = User.objects.get(email="root@example.com")
    assert user.is_admin and user.check_password("a much better password")
    call_command("bootstrap_admin", email="root@example.com", password="another good password")
    user.refresh_from_db()
    assert user.check_password("another good password")
    assert "Updated admin root@example.com" in capsys.readouterr().out
