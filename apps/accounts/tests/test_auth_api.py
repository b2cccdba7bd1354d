import pytest

from apps.accounts.models import AuthSession, User

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery"


def assert_error(response, status, code):
    body = response.json()
    assert response.status_code == status, body
    assert body["status"] == "error"
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    assert "details" in body["error"]
    assert body["request_id"] == response["X-Request-ID"]
    return body


def signup(client, email="ada@example.com", password=PASSWORD, **extra):
    return client.post("/v1/auth/signup", {"email": email, "password": password, **extra}, format="json")


def bearer(client, token):
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def test_signup_returns_tokens_in_envelope(api_client):
    response = signup(api_client, handle="ada")
    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "ok" and body["request_id"]
    data = body["data"]
    assert set(data) >= {
        "user_id",
        "session_id",
        "access_token",
        "refresh_token",
        "token_type",
        "role",
        "tenant_id",
        "mfa_required",
    }
    assert data["token_type"] == "bearer" and data["role"] == "user" and data["mfa_required"] is False
    user = User.objects.get(pk=data["user_id"])
    assert user.handle == "ada" and str(user.tenant_id) == data["tenant_id"]
    assert user.password.startswith("argon2")


def test_signup_duplicate_email_is_case_insensitive_conflict(api_client):
    assert signup(api_client).status_code == 201
    assert_error(signup(api_client, email="ADA@Example.com"), 409, "conflict")
    assert User.objects.count() == 1


@pytest.mark.parametrize(
    "payload, field",
    [
        ({"email": "not-an-email", "password": PASSWORD}, "email"),
        ({"email": "x@example.com"}, "password"),
        ({"email": "x@example.com", "password": "123"}, "password"),
        ({"email": "x@example.com", "password": "password"}, "password"),
        ({"email": "x@example.com", "password": PASSWORD, "handle": "bad handle!"}, "handle"),
    ],
)
def test_signup_rejects_bad_input_and_creates_nothing(api_client, payload, field):
    body = assert_error(api_client.post("/v1/auth/signup", payload, format="json"), 400, "validation_error")
    assert field in body["error"]["details"]
    assert not User.objects.exists()


def test_malformed_json_is_a_validation_error(api_client):
    response = api_client.generic("POST", "/v1/auth/login", "{not json", content_type="application/json")
    assert_error(response, 400, "validation_error")


def test_login_good_and_bad_credentials(api_client, make_user):
    user = make_user(email="bob@example.com")
    ok = api_client.post("/v1/auth/login", {"email": "BOB@example.com", "password": PASSWORD}, format="json")
    assert ok.status_code == 200 and ok.json()["data"]["user_id"] == str(user.id)
    bad = api_client.post("/v1/auth/login", {"email": "bob@example.com", "password": "wrong pass"}, format="json")
    assert_error(bad, 401, "unauthorized")
    unknown = api_client.post("/v1/auth/login", {"email": "nobody@example.com", "password": PASSWORD}, format="json")
    assert_error(unknown, 401, "unauthorized")


def test_me_requires_a_valid_token(api_client, make_user, login_tokens):
    assert_error(api_client.get("/v1/me"), 401, "unauthorized")
    assert_error(bearer(api_client, "lat_garbage").get("/v1/me"), 401, "unauthorized")
    user = make_user()
    tokens = login_tokens(user)
    me = bearer(api_client, tokens["access_token"]).get("/v1/me")
    assert me.status_code == 200
    assert me.json()["data"]["email"] == user.email


def test_logout_revokes_access_token_at_once(api_client, make_user, login_tokens):
    tokens = login_tokens(make_user())
    client = bearer(api_client, tokens["access_token"])
    assert client.get("/v1/me").status_code == 200
    assert client.post("/v1/auth/logout").status_code == 200
    assert_error(client.get("/v1/me"), 401, "unauthorized")
    refresh = api_client.post("/v1/auth/refresh", {"refresh_token": tokens["refresh_token"]}, format="json")
    assert_error(refresh, 401, "unauthorized")


def test_refresh_rotates_and_old_refresh_token_stops_working(api_client, make_user, login_tokens):
    tokens = login_tokens(make_user())
    first = api_client.post("/v1/auth/refresh", {"refresh_token": tokens["refresh_token"]}, format="json")
    assert first.status_code == 200
    rotated = first.json()["data"]
    assert rotated["refresh_token"] != tokens["refresh_token"]
    assert rotated["session_id"] == tokens["session_id"]
    assert bearer(api_client, rotated["access_token"]).get("/v1/me").status_code == 200
    second = api_client.post("/v1/auth/refresh", {"refresh_token": rotated["refresh_token"]}, format="json")
    assert second.status_code == 200
    newest = second.json()["data"]
    assert bearer(api_client, newest["access_token"]).get("/v1/me").status_code == 200


def test_reusing_a_rotated_refresh_token_revokes_the_whole_session(api_client, make_user, login_tokens):
    """Whoever copied the old token, and whoever holds the newer one, are both logged out: the
    server cannot tell which of them is the legitimate client."""
    user = make_user()
    tokens = login_tokens(user)
    other_session = login_tokens(user)  # another device: untouched
    rotated = api_client.post("/v1/auth/refresh", {"refresh_token": tokens["refresh_token"]}, format="json")
    rotated = rotated.json()["data"]
    replay = api_client.post("/v1/auth/refresh", {"refresh_token": tokens["refresh_token"]}, format="json")
    assert_error(replay, 401, "unauthorized")
    assert_error(bearer(api_client, rotated["access_token"]).get("/v1/me"), 401, "unauthorized")
    newer = api_client.post("/v1/auth/refresh", {"refresh_token": rotated["refresh_token"]}, format="json")
    assert_error(newer, 401, "unauthorized")
    assert bearer(api_client, other_session["access_token"]).get("/v1/me").status_code == 200
    # An unknown token revokes nothing.
    stray = api_client.post("/v1/auth/refresh", {"refresh_token": "not-a-token"}, format="json")
    assert_error(stray, 401, "unauthorized")
    assert bearer(api_client, other_session["access_token"]).get("/v1/me").status_code == 200


def test_expired_access_token_is_rejected(api_client, make_user, login_tokens, settings):
    tokens = login_tokens(make_user())
    settings.ACCESS_TOKEN_TTL_SECONDS = -1
    assert_error(bearer(api_client, tokens["access_token"]).get("/v1/me"), 401, "unauthorized")


def test_unknown_v1_url_and_wrong_method_use_the_envelope(api_client, make_user, login_tokens):
    assert_error(api_client.get("/v1/does-not-exist"), 404, "not_found")
    assert_error(api_client.get("/v1/auth/login"), 405, "method_not_allowed")


def test_server_error_uses_the_envelope(api_client, make_user, login_tokens, monkeypatch):
    from apps.accounts import selectors

    def explode(**kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(selectors, "user_profile", explode)
    tokens = login_tokens(make_user())
    api_client.raise_request_exception = False
    response = bearer(api_client, tokens["access_token"]).get("/v1/me")
    body = assert_error(response, 500, "server_error")
    assert "boom" not in body["error"]["message"]


def test_admin_settings_permission_matrix(api_client, make_user, login_tokens):
    assert_error(api_client.get("/v1/admin/settings"), 401, "unauthorized")
    user_tokens = login_tokens(make_user())
    assert_error(bearer(api_client, user_tokens["access_token"]).get("/v1/admin/settings"), 403, "forbidden")
    admin_tokens = login_tokens(make_user(role=User.Role.ADMIN))
    response = bearer(api_client, admin_tokens["access_token"]).get("/v1/admin/settings")
    assert response.status_code == 200
    assert "rate_limits" in response.json()["data"]


def test_a_user_cannot_see_or_revoke_another_users_sessions(api_client, make_user, login_tokens):
    alice_tokens = login_tokens(make_user(email="alice@example.com"))
    bob_tokens = login_tokens(make_user(email="bob@example.com"))
    bob = bearer(api_client, bob_tokens["access_token"])
    listed = bob.get("/v1/auth/sessions").json()["data"]["items"]
    assert [s["session_id"] for s in listed] == [bob_tokens["session_id"]]
    me = bob.get("/v1/me").json()["data"]
    assert me["email"] == "bob@example.com" and me["user_id"] != alice_tokens["user_id"]
    assert_error(bob.delete(f"/v1/auth/sessions/{alice_tokens['session_id']}"), 404, "not_found")
    assert AuthSession.objects.get(pk=alice_tokens["session_id"]).revoked_at is None
    alice = bearer(api_client, alice_tokens["access_token"])
    assert alice.get("/v1/me").json()["data"]["email"] == "alice@example.com"


def test_a_forged_token_for_another_user_is_rejected(api_client, make_user, login_tokens):
    from apps.accounts.tokens import access_token_issue

    alice_tokens = login_tokens(make_user())
    bob = make_user()
    # A validly signed token whose session belongs to someone else must not authenticate.
    forged = access_token_issue(session_id=alice_tokens["session_id"], user_id=bob.id)
    assert_error(bearer(api_client, forged).get("/v1/me"), 401, "unauthorized")
