import pytest


@pytest.mark.django_db
def test_healthz_reports_every_check(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body == {"status": "healthy", "checks": {"database": "ok", "redis": "ok", "filesystem": "ok"}}


@pytest.mark.django_db
def test_healthz_is_503_when_the_shared_filesystem_is_unusable(client, settings, tmp_path):
    not_a_directory = tmp_path / "occupied"
    not_a_directory.write_text("a file where the shared root should be")
    settings.SHARED_FS_ROOT = not_a_directory
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unhealthy"
    assert body["checks"]["filesystem"].startswith("error:")
    assert body["checks"]["database"] == "ok"


@pytest.mark.django_db
def test_healthz_is_503_when_redis_is_unreachable(client, settings):
    settings.CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5},
        }
    }
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["checks"]["redis"].startswith("error:")
