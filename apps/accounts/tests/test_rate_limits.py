import pytest

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def hour_long_windows(settings):
    """Same limits, hour-long windows: a minute boundary mid-test must not reset a counter."""
    settings.RATE_LIMITS = {scope: (limit, 3600) for scope, (limit, _) in settings.RATE_LIMITS.items()}


def test_login_is_limited_per_email(api_client, make_user, settings):
    user = make_user()
    limit, _ = settings.RATE_LIMITS["login_email"]
    for i in range(limit):
        # Vary the client address so only the per-email counter is exhausted.
        response = api_client.post(
            "/v1/auth/login", {"email": user.email, "password": "wrong"}, format="json", REMOTE_ADDR=f"10.0.0.{i}"
        )
        assert response.status_code == 401
    blocked = api_client.post(
        "/v1/auth/login",
        {"email": user.email, "password": "correct horse battery"},
        format="json",
        REMOTE_ADDR="10.0.1.1",
    )
    assert blocked.status_code == 429
    assert blocked.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(blocked["Retry-After"]) <= 3601


def test_login_is_limited_per_ip(api_client, make_user, settings):
    limit, _ = settings.RATE_LIMITS["login_ip"]
    for i in range(limit):
        api_client.post("/v1/auth/login", {"email": f"u{i}@example.com", "password": "x"}, format="json")
    blocked = api_client.post("/v1/auth/login", {"email": "other@example.com", "password": "x"}, format="json")
    assert blocked.status_code == 429 and blocked["Retry-After"]


def test_signup_is_limited_per_ip(api_client, settings):
    limit, _ = settings.RATE_LIMITS["signup_ip"]
    for i in range(limit):
        response = api_client.post(
            "/v1/auth/signup", {"email": f"s{i}@example.com", "password": "correct horse battery"}, format="json"
        )
        assert response.status_code == 201
    blocked = api_client.post(
        "/v1/auth/signup", {"email": "late@example.com", "password": "correct horse battery"}, format="json"
    )
    assert blocked.status_code == 429
    from apps.accounts.models import User

    assert not User.objects.filter(email="late@example.com").exists()


def test_refresh_is_limited(api_client, settings):
    limit, _ = settings.RATE_LIMITS["refresh"]
    for _ in range(limit):
        assert api_client.post("/v1/auth/refresh", {"refresh_token": "lrt_x"}, format="json").status_code == 401
    assert api_client.post("/v1/auth/refresh", {"refresh_token": "lrt_x"}, format="json").status_code == 429
