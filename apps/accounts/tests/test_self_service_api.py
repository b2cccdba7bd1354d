"""MFA, password reset and change, email verification and change, profile: the /v1 API."""

import time

import pytest
from django.contrib.auth.tokens import default_token_generator

from apps.accounts.models import AuthSession, User
from apps.accounts.tests.conftest import link_token, totp_code
from apps.accounts.tests.test_auth_api import PASSWORD, assert_error, bearer

pytestmark = pytest.mark.django_db

NEW_PASSWORD = "a brand new passphrase"


@pytest.fixture(autouse=True)
def roomy_login_limits(settings):
    """These tests log in more often than the per-minute limits allow (those have their own tests)."""
    settings.RATE_LIMITS = {
        **settings.RATE_LIMITS,
        "login_email": (100, 60),
        "login_ip": (100, 60),
        "reset_ip": (100, 60),
        "account_user": (100, 60),
    }


def login(client, user, password=PASSWORD, **extra):
    return client.post("/v1/auth/login", {"email": user.email, "password": password, **extra}, format="json")


def field_error(response, field, status=400):
    body = assert_error(response, status, "validation_error")
    assert field in body["error"]["details"], body
    return body


def me_status(client, token) -> int:
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    status = client.get("/v1/me").status_code
    client.credentials()
    return status


# ---------------------------------------------------------------- MFA at login


def test_login_of_an_mfa_user_needs_a_code_then_verify_gives_tokens(api_client, mfa_user):
    user, _ = mfa_user()
    first = login(api_client, user)
    assert first.status_code == 200
    pending = first.json()["data"]
    assert pending["mfa_required"] is True and pending["session_id"]
    assert "access_token" not in pending and "refresh_token" not in pending
    assert not AuthSession.objects.filter(user=user, revoked_at__isnull=True).exists()

    verified = api_client.post(
        "/v1/auth/mfa/verify", {"session_id": pending["session_id"], "code": totp_code(user)}, format="json"
    )
    assert verified.status_code == 200, verified.content
    tokens = verified.json()["data"]
    assert tokens["mfa_required"] is False and tokens["user_id"] == str(user.id)
    assert me_status(api_client, tokens["access_token"]) == 200
    # The pending login is spent.
    again = api_client.post(
        "/v1/auth/mfa/verify", {"session_id": pending["session_id"], "code": totp_code(user)}, format="json"
    )
    assert_error(again, 404, "not_found")


def test_login_with_mfa_code_in_the_body(api_client, mfa_user):
    user, _ = mfa_user()
    assert_error(login(api_client, user, mfa_code="000000"), 401, "unauthorized")
    ok = login(api_client, user, mfa_code=totp_code(user))
    assert ok.status_code == 200 and ok.json()["data"]["access_token"]
    # A wrong password is still a plain 401 and says nothing about MFA.
    assert_error(login(api_client, user, password="wrong password"), 401, "unauthorized")


def test_a_user_without_mfa_logs_in_at_once(api_client, make_user):
    data = login(api_client, make_user(), mfa_code="123456").json()["data"]
    assert data["mfa_required"] is False and data["access_token"]


def test_a_recovery_code_works_once(api_client, mfa_user):
    user, codes = mfa_user()
    assert len(codes) == 10 and len(set(codes)) == 10
    ok = login(api_client, user, mfa_code=codes[0].upper()[:4] + "-" + codes[0][4:])
    assert ok.status_code == 200, ok.content
    assert_error(login(api_client, user, mfa_code=codes[0]), 401, "unauthorized")
    assert login(api_client, user, mfa_code=codes[1]).status_code == 200
    from apps.accounts.selectors import mfa_status

    assert mfa_status(actor=user)["recovery_codes_left"] == 8


def test_five_bad_codes_lock_the_user_for_five_minutes(api_client, mfa_user, make_user, settings):
    assert settings.MFA_MAX_FAILURES == 5 and settings.MFA_LOCKOUT_SECONDS == 300
    user, codes = mfa_user()
    other, _ = mfa_user()
    for _ in range(5):
        assert_error(login(api_client, user, mfa_code="000000"), 401, "unauthorized")
    locked = login(api_client, user, mfa_code=totp_code(user))
    assert_error(locked, 429, "rate_limited")
    assert 290 <= int(locked["Retry-After"]) <= 300
    # Recovery codes and the verify endpoint are locked too; another user is not.
    assert_error(login(api_client, user, mfa_code=codes[0]), 429, "rate_limited")
    pending = login(api_client, user).json()["data"]["session_id"]
    verify = api_client.post("/v1/auth/mfa/verify", {"session_id": pending, "code": totp_code(user)}, format="json")
    assert_error(verify, 429, "rate_limited")
    assert login(api_client, other, mfa_code=totp_code(other)).status_code == 200


def test_the_lockout_ends_and_a_success_resets_the_count(api_client, mfa_user, settings):
    settings.MFA_LOCKOUT_SECONDS = 3
    user, codes = mfa_user()
    for _ in range(4):
        login(api_client, user, mfa_code="000000")
    assert login(api_client, user, mfa_code=codes[0]).status_code == 200  # resets the count
    for _ in range(4):
        assert_error(login(api_client, user, mfa_code="000000"), 401, "unauthorized")
    assert login(api_client, user, mfa_code=codes[1]).status_code == 200
    for _ in range(5):
        login(api_client, user, mfa_code="000000")
    assert_error(login(api_client, user, mfa_code=codes[2]), 429, "rate_limited")
    time.sleep(3.2)
    assert login(api_client, user, mfa_code=codes[2]).status_code == 200


@pytest.mark.parametrize(
    "payload, field",
    [
        ({"code": "123456"}, "session_id"),
        ({"session_id": "not-a-uuid", "code": "123456"}, "session_id"),
        ({"session_id": "6f1c1a55-8d3c-4b8e-9a43-2f9c2a7a0b11"}, "code"),
        ({"session_id": "6f1c1a55-8d3c-4b8e-9a43-2f9c2a7a0b11", "code": "12ab"}, "code"),
        ({"session_id": "6f1c1a55-8d3c-4b8e-9a43-2f9c2a7a0b11", "code": "x" * 40}, "code"),
    ],
)
def test_mfa_verify_rejects_bad_input(api_client, payload, field):
    field_error(api_client.post("/v1/auth/mfa/verify", payload, format="json"), field)


def test_mfa_verify_of_an_unknown_login_is_not_found(api_client):
    response = api_client.post(
        "/v1/auth/mfa/verify", {"session_id": "6f1c1a55-8d3c-4b8e-9a43-2f9c2a7a0b11", "code": "123456"}, format="json"
    )
    assert_error(response, 404, "not_found")


def test_an_expired_pending_login_is_not_found(api_client, mfa_user, settings):
    settings.MFA_PENDING_LOGIN_SECONDS = -1
    user, _ = mfa_user()
    pending = login(api_client, user).json()["data"]["session_id"]
    verify = api_client.post("/v1/auth/mfa/verify", {"session_id": pending, "code": totp_code(user)}, format="json")
    assert_error(verify, 404, "not_found")


# ---------------------------------------------------------------- Enrolment, status, disable


def test_enrolment_through_the_api(api_client, make_user, login_tokens):
    user = make_user()
    tokens = login_tokens(user)
    other_device = login_tokens(user)
    client = bearer(api_client, tokens["access_token"])
    assert client.get("/v1/auth/mfa/status").json()["data"] == {
        "enabled": False,
        "configured": False,
        "recovery_codes_left": 0,
    }
    started = client.post("/v1/auth/mfa/request", {"session_id": tokens["session_id"]}, format="json")
    assert started.status_code == 200, started.content
    enrolment = started.json()["data"]
    uri = enrolment["otpauth_uri"]
    assert uri.startswith("otpauth://totp/Liminal%3A") and f"secret={enrolment['secret']}" in uri
    assert "algorithm=SHA1" in uri and "digits=6" in uri and "period=30" in uri
    assert enrolment["qr_code"].startswith("data:image/svg+xml;base64,")
    status = client.get("/v1/auth/mfa/status").json()["data"]
    assert status["configured"] is True and status["enabled"] is False
    # Not on yet: login needs no code.
    assert login(api_client, user).json()["data"]["mfa_required"] is False

    client = bearer(api_client, tokens["access_token"])
    wrong = client.post("/v1/auth/mfa/verify", {"session_id": tokens["session_id"], "code": "000000"}, format="json")
    field_error(wrong, "code")
    confirmed = client.post(
        "/v1/auth/mfa/verify",
        {"session_id": tokens["session_id"], "code": totp_code(user, confirmed=False)},
        format="json",
    )
    assert confirmed.status_code == 200, confirmed.content
    fresh = confirmed.json()["data"]
    assert len(fresh["recovery_codes"]) == 10 and fresh["access_token"]
    # Sessions opened before the second factor are revoked; the fresh one works.
    assert me_status(api_client, tokens["access_token"]) == 401
    assert me_status(api_client, other_device["access_token"]) == 401
    assert me_status(api_client, fresh["access_token"]) == 200
    client = bearer(api_client, fresh["access_token"])
    assert client.get("/v1/auth/mfa/status").json()["data"] == {
        "enabled": True,
        "configured": True,
        "recovery_codes_left": 10,
    }
    assert login(api_client, user).json()["data"]["mfa_required"] is True
    # Already on: a new enrolment is a conflict.
    client = bearer(api_client, fresh["access_token"])
    assert_error(
        client.post("/v1/auth/mfa/request", {"session_id": fresh["session_id"]}, format="json"), 409, "conflict"
    )


def test_mfa_request_needs_the_callers_own_session(api_client, make_user, login_tokens):
    assert_error(api_client.post("/v1/auth/mfa/request", {"session_id": "x"}, format="json"), 401, "unauthorized")
    assert_error(api_client.get("/v1/auth/mfa/status"), 401, "unauthorized")
    alice_tokens = login_tokens(make_user())
    bob_tokens = login_tokens(make_user())
    bob = bearer(api_client, bob_tokens["access_token"])
    field_error(bob.post("/v1/auth/mfa/request", {}, format="json"), "session_id")
    field_error(bob.post("/v1/auth/mfa/request", {"session_id": "nope"}, format="json"), "session_id")
    response = bob.post("/v1/auth/mfa/request", {"session_id": alice_tokens["session_id"]}, format="json")
    assert_error(response, 404, "not_found")
    # Bob cannot confirm an enrolment through Alice's session either: it is not his, so the id is
    # looked up as a pending login, which it is not.
    verify = bob.post(
        "/v1/auth/mfa/verify", {"session_id": alice_tokens["session_id"], "code": "123456"}, format="json"
    )
    assert_error(verify, 404, "not_found")
    assert bob.get("/v1/auth/mfa/status").json()["data"]["configured"] is False


def test_disable_needs_a_code_and_revokes_other_sessions(api_client, mfa_user, make_user, login_tokens):
    user, codes = mfa_user()
    current = login(api_client, user, mfa_code=codes[0]).json()["data"]
    other = login(api_client, user, mfa_code=codes[1]).json()["data"]
    client = bearer(api_client, current["access_token"])
    field_error(client.post("/v1/auth/mfa/disable", {}, format="json"), "code")
    field_error(client.post("/v1/auth/mfa/disable", {"code": "000000"}, format="json"), "code")
    assert client.get("/v1/auth/mfa/status").json()["data"]["enabled"] is True
    # Another user's disable touches only their own account.
    bob = bearer(api_client, login_tokens(make_user())["access_token"])
    assert_error(bob.post("/v1/auth/mfa/disable", {"code": totp_code(user)}, format="json"), 409, "conflict")
    client = bearer(api_client, current["access_token"])
    assert client.get("/v1/auth/mfa/status").json()["data"]["enabled"] is True

    disabled = client.post("/v1/auth/mfa/disable", {"code": totp_code(user)}, format="json")
    assert disabled.status_code == 200, disabled.content
    assert disabled.json()["data"]["enabled"] is False
    assert me_status(api_client, current["access_token"]) == 200
    assert me_status(api_client, other["access_token"]) == 401
    assert login(api_client, user).json()["data"]["mfa_required"] is False
    client = bearer(api_client, current["access_token"])
    assert_error(client.post("/v1/auth/mfa/disable", {"code": "123456"}, format="json"), 409, "conflict")


# ---------------------------------------------------------------- Password reset


def test_reset_request_answers_alike_and_mails_only_an_owner(api_client, make_user, mailoutbox):
    user = make_user(email="owner@example.com")
    known = api_client.post("/v1/auth/reset/request", {"email": "OWNER@example.com"}, format="json")
    unknown = api_client.post("/v1/auth/reset/request", {"email": "ghost@example.com"}, format="json")
    assert known.status_code == unknown.status_code == 202
    assert known.json()["data"] == unknown.json()["data"]
    assert [m.to for m in mailoutbox] == [[user.email]]
    assert "/accounts/password-reset/confirm/?token=" in mailoutbox[0].body
    assert "30 minutes" in mailoutbox[0].body


@pytest.mark.parametrize("payload, field", [({}, "email"), ({"email": "not an email"}, "email")])
def test_reset_request_rejects_bad_input(api_client, payload, field, mailoutbox):
    field_error(api_client.post("/v1/auth/reset/request", payload, format="json"), field)
    assert not mailoutbox


def test_reset_confirm_sets_the_password_revokes_sessions_and_is_single_use(
    api_client, make_user, login_tokens, mailoutbox
):
    user = make_user()
    sessions = [login_tokens(user), login_tokens(user)]
    api_client.post("/v1/auth/reset/request", {"email": user.email}, format="json")
    token = link_token(mailoutbox[0])
    weak = api_client.post("/v1/auth/reset/confirm", {"token": token, "new_password": "123"}, format="json")
    field_error(weak, "new_password")
    field_error(api_client.post("/v1/auth/reset/confirm", {"token": token}, format="json"), "new_password")
    field_error(api_client.post("/v1/auth/reset/confirm", {"new_password": NEW_PASSWORD}, format="json"), "token")
    forged = api_client.post(
        "/v1/auth/reset/confirm", {"token": token[:-3] + "abc", "new_password": NEW_PASSWORD}, format="json"
    )
    field_error(forged, "token")

    done = api_client.post("/v1/auth/reset/confirm", {"token": token, "new_password": NEW_PASSWORD}, format="json")
    assert done.status_code == 200, done.content
    assert all(me_status(api_client, s["access_token"]) == 401 for s in sessions)
    assert_error(login(api_client, user), 401, "unauthorized")
    assert login(api_client, user, password=NEW_PASSWORD).status_code == 200
    reused = api_client.post("/v1/auth/reset/confirm", {"token": token, "new_password": PASSWORD + "!"}, format="json")
    field_error(reused, "token")


def test_a_reset_token_expires_after_30_minutes(api_client, make_user, settings):
    assert settings.PASSWORD_RESET_TIMEOUT == 30 * 60
    from apps.accounts.tokens import password_reset_token_issue

    user = make_user()
    token = password_reset_token_issue(user)
    settings.PASSWORD_RESET_TIMEOUT = -1
    expired = api_client.post("/v1/auth/reset/confirm", {"token": token, "new_password": NEW_PASSWORD}, format="json")
    field_error(expired, "token")
    user.refresh_from_db()
    assert user.check_password(PASSWORD)


def test_a_reset_token_of_one_user_does_not_reset_another(api_client, make_user):
    alice, bob = make_user(), make_user()
    from django.utils.encoding import force_bytes
    from django.utils.http import urlsafe_base64_encode

    # Alice's token with Bob's id in front.
    spliced = f"{urlsafe_base64_encode(force_bytes(bob.pk))}.{default_token_generator.make_token(alice)}"
    response = api_client.post(
        "/v1/auth/reset/confirm", {"token": spliced, "new_password": NEW_PASSWORD}, format="json"
    )
    field_error(response, "token")
    bob.refresh_from_db()
    assert bob.check_password(PASSWORD)


def test_reset_request_is_rate_limited(api_client, settings, make_user, mailoutbox):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "reset_email": (2, 3600), "reset_ip": (100, 3600)}
    user = make_user()
    for _ in range(2):
        assert api_client.post("/v1/auth/reset/request", {"email": user.email}, format="json").status_code == 202
    blocked = api_client.post("/v1/auth/reset/request", {"email": user.email}, format="json")
    assert_error(blocked, 429, "rate_limited")
    assert len(mailoutbox) == 2


def test_mfa_verify_is_rate_limited_per_address(api_client, settings):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "mfa_ip": (3, 3600)}
    payload = {"session_id": "6f1c1a55-8d3c-4b8e-9a43-2f9c2a7a0b11", "code": "123456"}
    for _ in range(3):
        assert api_client.post("/v1/auth/mfa/verify", payload, format="json").status_code == 404
    assert_error(api_client.post("/v1/auth/mfa/verify", payload, format="json"), 429, "rate_limited")


# ---------------------------------------------------------------- Email verification and sign-up


def test_signup_mails_a_verification_link_that_works_once(api_client, mailoutbox):
    signed_up = api_client.post("/v1/auth/signup", {"email": "new@example.com", "password": PASSWORD}, format="json")
    assert signed_up.status_code == 201
    assert User.objects.get(email="new@example.com").email_verified_at is None
    assert [m.to for m in mailoutbox] == [["new@example.com"]]
    token = link_token(mailoutbox[0])
    verified = api_client.post("/v1/auth/verify_email", {"token": token}, format="json")
    assert verified.status_code == 200 and verified.json()["data"] == {"verified": True, "email": "new@example.com"}
    assert User.objects.get(email="new@example.com").email_verified_at is not None
    field_error(api_client.post("/v1/auth/verify_email", {"token": token}, format="json"), "token")


@pytest.mark.parametrize("payload", [{}, {"token": ""}, {"token": "garbage"}, {"token": "x" * 2000}])
def test_verify_email_rejects_bad_tokens(api_client, payload):
    field_error(api_client.post("/v1/auth/verify_email", payload, format="json"), "token")


def test_a_verification_token_expires(api_client, make_user, settings):
    from apps.accounts.tokens import email_link_token_issue

    user = make_user()
    token = email_link_token_issue(user_id=user.pk, email=user.email, purpose="verify")
    settings.EMAIL_VERIFICATION_TIMEOUT = -1
    field_error(api_client.post("/v1/auth/verify_email", {"token": token}, format="json"), "token")


def test_with_verification_required_signup_does_not_reveal_registered_addresses(
    api_client, make_user, settings, mailoutbox
):
    settings.EMAIL_VERIFICATION_REQUIRED = True
    owner = make_user(email="taken@example.com")
    new = api_client.post("/v1/auth/signup", {"email": "fresh@example.com", "password": PASSWORD}, format="json")
    taken = api_client.post("/v1/auth/signup", {"email": "TAKEN@example.com", "password": PASSWORD}, format="json")
    assert new.status_code == taken.status_code == 202
    assert (
        new.json()["data"]
        == taken.json()["data"]
        == {
            "verification_required": True,
            "detail": new.json()["data"]["detail"],
        }
    )
    assert "access_token" not in new.json()["data"]
    assert User.objects.filter(email__iexact="taken@example.com").count() == 1
    by_address = {m.to[0]: m for m in mailoutbox}
    assert set(by_address) == {"fresh@example.com", owner.email}
    assert "?token=" in by_address["fresh@example.com"].body
    assert "already has one" in by_address[owner.email].body and "?token=" not in by_address[owner.email].body
    # Password rules still apply, alike for both.
    field_error(
        api_client.post("/v1/auth/signup", {"email": "taken@example.com", "password": "123"}, format="json"), "password"
    )


def test_with_verification_required_login_waits_for_the_link(api_client, settings, mailoutbox):
    settings.EMAIL_VERIFICATION_REQUIRED = True
    api_client.post("/v1/auth/signup", {"email": "wait@example.com", "password": PASSWORD}, format="json")
    user = User.objects.get(email="wait@example.com")
    assert_error(login(api_client, user), 403, "forbidden")
    assert len(mailoutbox) == 2  # the sign-up link, and a fresh one for the refused login
    assert (
        api_client.post("/v1/auth/verify_email", {"token": link_token(mailoutbox[-1])}, format="json").status_code
        == 200
    )
    assert login(api_client, user).status_code == 200


def test_without_verification_required_a_registered_address_is_a_conflict(api_client, make_user, settings):
    """The documented trade-off (README, Accounts): sign-up that logs in at once cannot answer alike."""
    assert settings.EMAIL_VERIFICATION_REQUIRED is False
    make_user(email="dup@example.com")
    response = api_client.post("/v1/auth/signup", {"email": "dup@example.com", "password": PASSWORD}, format="json")
    assert_error(response, 409, "conflict")


# ---------------------------------------------------------------- Profile: handle, email, password


def test_profile_handle_change(api_client, make_user, login_tokens):
    make_user(handle="taken")
    user = make_user()
    client = bearer(api_client, login_tokens(user)["access_token"])
    field_error(client.patch("/v1/me", {"handle": "bad handle!"}, format="json"), "handle")
    field_error(client.patch("/v1/me", {}, format="json"), "handle")
    assert_error(client.patch("/v1/me", {"handle": "TAKEN"}, format="json"), 409, "conflict")
    ok = client.patch("/v1/me", {"handle": "ada.l"}, format="json")
    assert ok.status_code == 200 and ok.json()["data"]["handle"] == "ada.l"
    user.refresh_from_db()
    assert user.handle == "ada.l"
    assert_error(api_client.__class__().patch("/v1/me", {"handle": "x1"}, format="json"), 401, "unauthorized")


def test_email_change_is_confirmed_from_the_new_address(api_client, make_user, login_tokens, mailoutbox):
    make_user(email="someone@example.com")
    user = make_user(email="me@example.com")
    client = bearer(api_client, login_tokens(user)["access_token"])
    field_error(client.post("/v1/me/email", {"new_email": "new@example.com"}, format="json"), "password")
    field_error(client.post("/v1/me/email", {"new_email": "nope", "password": PASSWORD}, format="json"), "new_email")
    wrong = client.post("/v1/me/email", {"new_email": "new@example.com", "password": "wrong"}, format="json")
    field_error(wrong, "password")
    same = client.post("/v1/me/email", {"new_email": "ME@example.com", "password": PASSWORD}, format="json")
    field_error(same, "new_email")
    taken = client.post("/v1/me/email", {"new_email": "someone@example.com", "password": PASSWORD}, format="json")
    assert not mailoutbox
    fresh = client.post("/v1/me/email", {"new_email": "new@example.com", "password": PASSWORD}, format="json")
    assert taken.status_code == fresh.status_code == 202 and taken.json()["data"] == fresh.json()["data"]
    assert sorted(m.to[0] for m in mailoutbox) == ["me@example.com", "new@example.com"]
    user.refresh_from_db()
    assert user.email == "me@example.com"
    token = link_token(next(m for m in mailoutbox if m.to == ["new@example.com"]))
    assert api_client.post("/v1/auth/verify_email", {"token": token}, format="json").json()["data"]["email"] == (
        "new@example.com"
    )
    user.refresh_from_db()
    assert user.email == "new@example.com" and user.email_verified_at is not None
    field_error(api_client.post("/v1/auth/verify_email", {"token": token}, format="json"), "token")


def test_password_change_revokes_the_other_sessions(api_client, make_user, login_tokens):
    user = make_user()
    current, other = login_tokens(user), login_tokens(user)
    client = bearer(api_client, current["access_token"])
    field_error(
        client.post("/v1/me/password", {"current_password": "wrong", "new_password": NEW_PASSWORD}, format="json"),
        "current_password",
    )
    field_error(
        client.post("/v1/me/password", {"current_password": PASSWORD, "new_password": "123"}, format="json"),
        "new_password",
    )
    field_error(client.post("/v1/me/password", {"new_password": NEW_PASSWORD}, format="json"), "current_password")
    assert me_status(api_client, other["access_token"]) == 200
    client = bearer(api_client, current["access_token"])
    ok = client.post("/v1/me/password", {"current_password": PASSWORD, "new_password": NEW_PASSWORD}, format="json")
    assert ok.status_code == 200, ok.content
    assert me_status(api_client, current["access_token"]) == 200
    assert me_status(api_client, other["access_token"]) == 401
    assert login(api_client, user, password=NEW_PASSWORD).status_code == 200


def test_a_user_cannot_change_another_users_password_or_email(api_client, make_user, login_tokens, mailoutbox):
    alice = make_user(email="alice@example.com")
    bob = make_user(email="bob@example.com")
    alice_tokens = login_tokens(alice)
    client = bearer(api_client, login_tokens(bob)["access_token"])
    # Bob's calls act on Bob alone: Alice's password is not Bob's, so nothing changes for anyone.
    field_error(
        client.post("/v1/me/password", {"current_password": "alice's?", "new_password": NEW_PASSWORD}, format="json"),
        "current_password",
    )
    client.post("/v1/me/email", {"new_email": "alice@example.com", "password": PASSWORD}, format="json")
    assert not mailoutbox
    alice.refresh_from_db()
    assert alice.check_password(PASSWORD) and alice.email == "alice@example.com"
    assert me_status(api_client, alice_tokens["access_token"]) == 200


def test_sessions_list_names_their_kind(api_client, make_user, login_tokens):
    tokens = login_tokens(make_user())
    items = bearer(api_client, tokens["access_token"]).get("/v1/auth/sessions").json()["data"]["items"]
    assert [(i["kind"], i["current"]) for i in items] == [("api", True)]
