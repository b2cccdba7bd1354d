"""The site's own 404 and 500 pages with DEBUG off, and the JSON envelope that /v1/ keeps."""

import uuid

import pytest
from django.conf import settings as django_settings
from django.template import Context, Engine
from django.template.loader import get_template
from django.test import Client
from django.urls import include, path

pytestmark = pytest.mark.django_db


def _crash(request):
    raise RuntimeError("a bug in a view")


# This module is the URLconf of the tests below: the site's URLs plus two views that crash.
urlpatterns = [
    path("crash/", _crash),
    path("v1/crash", _crash),
    path("", include("liminal.urls")),
]


@pytest.fixture(autouse=True)
def production_errors(settings):
    settings.DEBUG = False
    settings.ROOT_URLCONF = __name__


def test_unknown_page_is_the_sites_404(client):
    response = client.get("/no-such-page/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")
    text = response.content.decode()
    assert "Page not found" in text and "/no-such-page/" in text
    # The site's own page, with its top bar; a visitor who is not logged in is offered a login.
    assert 'class="topbar"' in text and 'id="theme-toggle"' in text
    assert 'href="/accounts/login/"' in text


def test_404_for_a_logged_in_user_links_back_to_their_chats(client, make_user):
    client.force_login(make_user(handle="ada"))
    for url in ("/no-such-page/", f"/c/{uuid.uuid4()}/", f"/knowledge/files/{uuid.uuid4()}/"):
        response = client.get(url)
        assert response.status_code == 404, url
        text = response.content.decode()
        assert "Page not found" in text and "Back to your chats" in text, url
        assert "ada" in text  # the top bar knows who is logged in


def test_404_escapes_the_path(client):
    text = client.get("/<script>alert(1)</script>/").content.decode()
    assert "<script>alert(1)" not in text


def test_api_404_stays_a_json_envelope(client, api_client):
    for response in (client.get("/v1/no-such-thing"), api_client.get("/v1/conversations/nope/nope")):
        assert response.status_code == 404
        assert response["Content-Type"].startswith("application/json")
        body = response.json()
        assert body["status"] == "error" and body["error"]["code"] == "not_found"
        assert "Page not found" not in response.content.decode()


def test_crash_is_the_sites_500():
    client = Client(raise_request_exception=False)
    response = client.get("/crash/")
    assert response.status_code == 500
    assert response["Content-Type"].startswith("text/html")
    text = response.content.decode()
    assert "Something went wrong" in text and 'href="/"' in text
    assert "a bug in a view" not in text and "Traceback" not in text


def test_api_crash_stays_a_json_envelope():
    client = Client(raise_request_exception=False)
    response = client.get("/v1/crash")
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "server_error"


def test_500_page_needs_no_context_processors_database_or_static_files(django_assert_num_queries):
    with django_assert_num_queries(0):
        served = get_template("500.html").render()
    # A bare template engine, with no context processors and no tag libraries beyond the
    # built-ins (no {% static %}, no {% url %}), renders the same page from no context at all.
    bare = Engine(dirs=[str(django_settings.BASE_DIR / "templates")])
    assert bare.get_template("500.html").render(Context()) == served
    assert "Something went wrong" in served and "{{" not in served and "{%" not in served
