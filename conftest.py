"""Fixtures shared by every test: real PostgreSQL+pgvector, real Redis, real Celery workers."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent


@pytest.fixture
def make_user(db):
    from apps.accounts.services import user_create

    counter = {"n": 0}

    def make(email=None, password="correct horse battery", **fields):
        counter["n"] += 1
        email = email or f"user{counter['n']}-{time.monotonic_ns()}@example.com"
        return user_create(email=email, password=password, **fields)

    return make


@pytest.fixture
def api_client():
    from rest_framework.test import APIClient

    return APIClient()


@pytest.fixture
def login_tokens(api_client):
    def login(user, password="correct horse battery") -> dict:
        response = api_client.post("/v1/auth/login", {"email": user.email, "password": password}, format="json")
        assert response.status_code == 200, response.content
        return response.json()["data"]

    return login


def worker_environment(db_name: str) -> dict:
    """Environment for a worker or server process that must use pytest's test database."""
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="liminal.settings_test",
        LIMINAL_DB_NAME=db_name,
        PYTHONUNBUFFERED="1",
        # Short answers keep real-model tests quick on CPU; a short heartbeat makes death visible fast.
        CHAT_MAX_TOKENS=os.environ.get("TEST_CHAT_MAX_TOKENS", "48"),
        GENERATION_HEARTBEAT_SECONDS="3",
        # A training job's heartbeat every 5 s; 20 s of silence and the reaper resends it.
        TRAINING_STALE_AFTER_S="20",
        ENGINE_BATCH_SLOTS="4",
        ENGINE_MAX_SEQ_LEN="1024",
        # Shapes compile on first use instead; a full warm-up would add about a minute per session.
        ENGINE_WARMUP="0",
    )
    if os.environ.get("DATABASE_URL"):
        from urllib.parse import urlsplit, urlunsplit

        parts = urlsplit(os.environ["DATABASE_URL"])
        env["DATABASE_URL"] = urlunsplit(parts._replace(path="/" + db_name))
    return env


@pytest.fixture(scope="session")
def test_db_name(django_db_setup, django_db_blocker):
    from django.db import connection

    with django_db_blocker.unblock():
        return connection.settings_dict["NAME"]


def _wait_for_log(process, log_path: Path, marker: str, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while marker not in log_path.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start:\n" + log_path.read_text(errors="replace")[-4000:])
        time.sleep(0.2)


def _stop(process) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def live_worker(test_db_name, tmp_path_factory):
    """One real `celery worker` process for the session, on the real Redis broker, consuming every
    queue with a threads pool (as the inference worker runs), bound to the test database."""
    from liminal.celery import app

    app.control.purge()
    log_path = tmp_path_factory.mktemp("worker") / "worker.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "liminal",
                "worker",
                "-Q",
                "default,ingest,cluster,train,inference",
                "--pool",
                "threads",
                "--concurrency",
                "6",
                "--without-heartbeat",
                "--without-gossip",
                "--without-mingle",
                "-n",
                f"test-{os.getpid()}@%h",
                "--loglevel",
                "INFO",
            ],
            cwd=PROJECT_ROOT,
            env=worker_environment(test_db_name),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_for_log(process, log_path, "ready.", "Celery worker")
        process.log_path = log_path
        yield process
    finally:
        _stop(process)


@pytest.fixture
def celery_worker_process(transactional_db, live_worker):
    """The session's real worker, for a test whose rows it must see (hence committed data)."""
    assert live_worker.poll() is None, live_worker.log_path.read_text()[-4000:]
    return live_worker


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def live_server_url(test_db_name, tmp_path_factory):
    """A real Daphne (ASGI) server on the test database, for HTTP clients and the browser."""
    port = _free_port()
    log_path = tmp_path_factory.mktemp("server") / "daphne.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "liminal.asgi:application"],
            cwd=PROJECT_ROOT,
            env=worker_environment(test_db_name),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_for_log(process, log_path, "Listening on TCP address", "Daphne")
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop(process)
