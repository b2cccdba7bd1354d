"""GET /readyz: ready (200) only while an inference worker announces a warm engine; 503 in the
envelope, with the reason, before the first announcement and once the last one has expired.
(/healthz, liveness, is apps/accounts/tests/test_health.py's.)"""

import time
import uuid

import pytest

from apps.conversations import engine_runtime
from liminal import health

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def own_announcements(monkeypatch):
    """Announcements of this test only: a live worker of the session announces its own."""
    monkeypatch.setattr(health, "READINESS_PREFIX", f"test-ready-{uuid.uuid4().hex}:")


def _wait_for_status(client, status: int, timeout: float = 15):
    deadline = time.monotonic() + timeout
    while (response := client.get("/readyz")).status_code != status:
        assert time.monotonic() < deadline, f"/readyz stayed {response.status_code}: {response.json()}"
        time.sleep(0.1)
    return response.json()


def test_not_ready_before_an_engine_is_announced_ready_after_and_not_once_it_expires(client):
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "error" and body["error"]["code"] == "not_ready"
    assert "no inference worker has its engine" in body["error"]["message"]
    assert body["error"]["details"]["checks"] == {"database": "ok", "redis": "ok"}
    assert client.get("/healthz").status_code == 200  # alive all the same

    health.engine_ready_announce(worker="gpu-node-1:4242", ttl=1)
    response = client.get("/readyz")
    assert response.status_code == 200
    data = response.json()["data"]
    assert data["ready"] is True and [w["worker"] for w in data["inference_workers"]] == ["gpu-node-1:4242"]

    body = _wait_for_status(client, 503)
    assert body["error"]["details"]["inference_workers"] == []


def test_an_inference_worker_announces_its_warm_engine_while_it_has_it(client, settings, monkeypatch):
    settings.ENGINE_READY_TTL_S = 1
    monkeypatch.setattr(engine_runtime, "get_engine", lambda: None)  # loading is the engine's tests'
    monkeypatch.setattr(engine_runtime, "_engine", object())
    assert engine_runtime.warm_up_in_background(["inference"])

    data = _wait_for_status(client, 200)["data"]
    assert len(data["inference_workers"]) == 1
    monkeypatch.setattr(engine_runtime, "_engine", None)  # the engine is gone: announcements stop
    _wait_for_status(client, 503)


def test_not_ready_when_the_state_redis_is_unreachable(client, settings, monkeypatch):
    health.engine_ready_announce(worker="gpu-node-1:4242", ttl=30)
    monkeypatch.setattr(health, "_state_client", None)
    settings.STATE_REDIS_URL = "redis://127.0.0.1:1/0"
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "not_ready"
    assert response.json()["error"]["details"]["checks"]["redis"].startswith("error:")
