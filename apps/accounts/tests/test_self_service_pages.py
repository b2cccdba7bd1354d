"""The account pages: MFA login and setup, sessions, profile, password reset, email verification."""

import re

import pytest
from django.test import Client

from apps.accounts.models import AuthSession, User
from apps.accounts.tests.conftest import link_token, totp_code

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery"
NEW_PASSWORD = "a brand new passphrase"


@pytest.fixture(autouse=True)
def roomy_limits(settings):
    settings.RATE_LIMITS = {
        **settings.RATE_LIMITS,
        "login_email": (100, 60),
        "login_ip": (100, 60),
        "reset_ip": (100, 60),
        "account_user": (100, 60),
    }


def page_login(client, user, password=PASSWORD):
    return client.post("/accounts/login/", {"email": user.email, "password": password})


def logged_in(client) -> bool:
    return client.get("/").status_code == 200


def test_login_page_asks_an_mfa_user_for_a_code(client, mfa_user):
    user, codes = mfa_user()
    first = page_login(client, user)
    assert first.status_code == 302 and first["Location"] == "/accounts/login/mfa/"
    assert not logged_in(client)
    wrong = client.post("/accounts/login/mfa/", {"code": "000000"})
    assert wrong.status_code == 401 and b"not correct" in wrong.content
    malformed = client.post("/accounts/login/mfa/", {"code": "abc"})
    assert malformed.status_code == 400
    assert client.post("/accounts/login/mfa/", {"code": totp_code(user)}).status_code == 302
    assert logged_in(client)
    assert AuthSession.objects.filter(user=user, kind=AuthSession.Kind.BROWSER, revoked_at__isnull=True).count() == 1
    # The step cannot be replayed: the pending login is gone from the session.
    assert client.get("/accounts/login/mfa/")["Location"] == "/accounts/login/"


def test_the_mfa_step_keeps_a_local_next_url(client, mfa_user):
    user, codes = mfa_user()
    first = client.post("/accounts/login/?next=/knowledge/", {"email": user.email, "password": PASSWORD})
    assert first["Location"] == "/accounts/login/mfa/?next=%2Fknowledge%2F"
    done = client.post(first["Location"], {"code": codes[0]})
    assert done.status_code == 302 and done["Location"] == "/knowledge/"


def test_mfa_setup_page_shows_a_qr_code_then_recovery_codes(client, make_user):
    user = make_user()
    page_login(client, user)
    other = Client()
    page_login(other, user)
    page = client.get("/accounts/security/")
    assert page.status_code == 200 and b"is <strong>off</strong>" in page.content
    started = client.post("/accounts/security/", {"action": "start"})
    assert started.status_code == 200
    assert b'src="data:image/svg+xml;base64,' in started.content
    assert re.search(rb'id="totp-secret">[A-Z2-7]{32}<', started.content)
    wrong = client.post("/accounts/security/", {"action": "confirm", "code": "000000"})
    assert wrong.status_code == 400 and b"not correct" in wrong.content
    done = client.post("/accounts/security/", {"action": "confirm", "code": totp_code(user, confirmed=False)})
    assert done.status_code == 200
    shown = re.findall(rb"<code>([a-z2-7]{4}-[a-z2-7]{4})</code>", done.content)
    assert len(shown) == 10
    assert b"is <strong>on</strong>" in done.content
    # This browser stays logged in; the other one is logged out.
    assert logged_in(client) and not logged_in(other)
    # A shown recovery code logs in.
    fresh = Client()
    page_login(fresh, user)
    assert fresh.post("/accounts/login/mfa/", {"code": shown[0].decode()}).status_code == 302
    assert logged_in(fresh)


def test_mfa_can_be_turned_off_from_the_page(client, mfa_user):
    user, codes = mfa_user()
    page_login(client, user)
    client.post("/accounts/login/mfa/", {"code": codes[0]})
    assert client.post("/accounts/security/", {"action": "disable", "code": "000000"}).status_code == 400
    off = client.post("/accounts/security/", {"action": "disable", "code": codes[1]})
    assert off.status_code == 200 and b"is <strong>off</strong>" in off.content
    fresh = Client()
    assert page_login(fresh, user)["Location"] == "/"


def test_sessions_page_lists_devices_and_revokes_one(client, make_user, login_tokens, api_client):
    user = make_user()
    page_login(client, user)
    laptop = Client(HTTP_USER_AGENT="LaptopBrowser/1.0")
    page_login(laptop, user)
    api = login_tokens(user)
    page = client.get("/accounts/sessions/")
    assert page.status_code == 200
    assert page.content.count(b"(this browser)") == 1 and b"LaptopBrowser/1.0" in page.content
    laptop_session = AuthSession.objects.get(user=user, user_agent="LaptopBrowser/1.0")
    assert client.post("/accounts/sessions/", {"session_id": str(laptop_session.id)}).status_code == 302
    assert not logged_in(laptop) and logged_in(client)
    client.post("/accounts/sessions/", {"action": "revoke_others"})
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {api['access_token']}")
    assert api_client.get("/v1/me").status_code == 401
    assert logged_in(client)


def test_sessions_page_cannot_revoke_another_users_session(client, make_user):
    alice, bob = make_user(), make_user()
    alice_browser = Client()
    page_login(alice_browser, alice)
    alice_session = AuthSession.objects.get(user=alice)
    page_login(client, bob)
    assert client.post("/accounts/sessions/", {"session_id": str(alice_session.id)}).status_code == 404
    assert client.post("/accounts/sessions/", {"session_id": "not-a-uuid"}).status_code == 404
    assert str(alice_session.id).encode() not in client.get("/accounts/sessions/").content
    alice_session.refresh_from_db()
    assert alice_session.revoked_at is None and logged_in(alice_browser)


def test_logout_revokes_the_browser_session(client, make_user):
    user = make_user()
    page_login(client, user)
    client.post("/accounts/logout/")
    assert AuthSession.objects.get(user=user).revoked_at is not None


def test_account_pages_need_login(client):
    for path in ("/accounts/profile/", "/accounts/security/", "/accounts/sessions/"):
        response = client.get(path)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_profile_page_changes_handle_email_and_password(client, make_user, mailoutbox):
    make_user(handle="taken")
    user = make_user()
    page_login(client, user)
    other = Client()
    page_login(other, user)
    assert client.post("/accounts/profile/", {"action": "handle", "handle-handle": "bad handle!"}).status_code == 400
    assert client.post("/accounts/profile/", {"action": "handle", "handle-handle": "Taken"}).status_code == 409
    assert client.post("/accounts/profile/", {"action": "handle", "handle-handle": "grace"}).status_code == 200
    user.refresh_from_db()
    assert user.handle == "grace"

    wrong = client.post(
        "/accounts/profile/", {"action": "email", "email-new_email": "g@example.com", "email-password": "nope"}
    )
    assert wrong.status_code == 400 and not mailoutbox
    sent = client.post(
        "/accounts/profile/", {"action": "email", "email-new_email": "g@example.com", "email-password": PASSWORD}
    )
    assert sent.status_code == 200 and b"We have sent a link" in sent.content
    confirm = next(m for m in mailoutbox if m.to == ["g@example.com"])
    assert client.post(f"/accounts/verify-email/?token={link_token(confirm)}").status_code == 200
    user.refresh_from_db()
    assert user.email == "g@example.com"

    weak = client.post(
        "/accounts/profile/",
        {"action": "password", "password-current_password": PASSWORD, "password-new_password": "123"},
    )
    assert weak.status_code == 400
    changed = client.post(
        "/accounts/profile/",
        {"action": "password", "password-current_password": PASSWORD, "password-new_password": NEW_PASSWORD},
    )
    assert changed.status_code == 200
    assert logged_in(client) and not logged_in(other)
    user.refresh_from_db()
    assert user.check_password(NEW_PASSWORD)


def test_password_reset_pages(client, make_user, mailoutbox):
    user = make_user()
    other = Client()
    page_login(other, user)
    form = client.get("/accounts/password-reset/")
    assert form.status_code == 200 and b"csrfmiddlewaretoken" in form.content
    known = client.post("/accounts/password-reset/", {"email": user.email})
    unknown = client.post("/accounts/password-reset/", {"email": "nobody@example.com"})
    assert known.status_code == unknown.status_code == 200
    assert b"If an account has this address" in known.content and b"If an account has this address" in unknown.content
    assert len(mailoutbox) == 1
    token = link_token(mailoutbox[0])
    assert client.get("/accounts/password-reset/confirm/?token=bogus").status_code == 400
    url = f"/accounts/password-reset/confirm/?token={token}"
    assert client.get(url).status_code == 200
    assert client.post(url, {"new_password": "123"}).status_code == 400
    done = client.post(url, {"new_password": NEW_PASSWORD})
    assert done.status_code == 200 and b"every session was logged out" in done.content
    assert not logged_in(other)
    assert client.get(url).status_code == 400  # spent
    assert page_login(client, user, NEW_PASSWORD).status_code == 302


def test_verify_email_page_needs_a_click(client, make_user, mailoutbox):
    client.post("/accounts/signup/", {"email": "v@example.com", "password": PASSWORD})
    url = f"/accounts/verify-email/?token={link_token(mailoutbox[0])}"
    assert client.get(url).status_code == 200
    assert User.objects.get(email="v@example.com").email_verified_at is None  # a link scanner spends nothing
    confirmed = client.post(url)
    assert confirmed.status_code == 200 and b"is confirmed" in confirmed.content
    assert User.objects.get(email="v@example.com").email_verified_at is not None
    assert client.post(url).status_code == 400
    assert client.post("/accounts/verify-email/?token=junk").status_code == 400


def test_signup_page_with_verification_required_answers_alike(make_user, settings, mailoutbox):
    settings.EMAIL_VERIFICATION_REQUIRED = True
    make_user(email="taken@example.com")
    pages = []
    for email in ("fresh@example.com", "taken@example.com"):
        browser = Client()
        response = browser.post("/accounts/signup/", {"email": email, "password": PASSWORD})
        page = response.content.replace(email.encode(), b"EMAIL")
        pages.append(re.sub(rb'"X-CSRFToken": "[^"]*"|name="csrfmiddlewaretoken" value="[^"]*"', b"", page))
        assert response.status_code == 200 and not logged_in(browser)
    assert pages[0] == pages[1]
    assert b"Check your inbox" in pages[0]
    assert sorted(m.to[0] for m in mailoutbox) == ["fresh@example.com", "taken@example.com"]
    unverified = Client()
    refused = page_login(unverified, User.objects.get(email="fresh@example.com"))
    assert refused.status_code == 403 and not logged_in(unverified)


def test_a_browser_whose_session_row_is_revoked_is_logged_out_on_its_next_request(client, make_user):
    """Even when its Django session outlived the row (e.g. its key moved on): the middleware checks."""
    from django.utils import timezone

    user = make_user()
    page_login(client, user)
    assert logged_in(client)
    AuthSession.objects.filter(user=user).update(revoked_at=timezone.now())
    assert not logged_in(client)
