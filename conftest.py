"""Fixtures shared by every test: real PostgreSQL+pgvector, real Redis, real Celery workers."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from django.conf import settings

PROJECT_ROOT = Path(__file__).resolve().parent


@pytest.fixture(autouse=True)
def _fresh_redis_state():
    """Rate-limit counters, cache and channel groups must not leak between tests."""
    from liminal.settings import redis_db_url

    for db in (settings.REDIS_DB_CACHE, settings.REDIS_DB_STATE, settings.REDIS_DB_CHANNELS):
        redis.Redis.from_url(redis_db_url(db)).flushdb()
    yield


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
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="liminal.settings_test",
        LIMINAL_DB_NAME=db_name,
        PYTHONUNBUFFERED="1",
    )
    if os.environ.get("DATABASE_URL"):
        # The worker must see the test database that pytest-django created, not the dev one.
        from urllib.parse import urlsplit, urlunsplit

        parts = urlsplit(os.environ["DATABASE_URL"])
        env["DATABASE_URL"] = urlunsplit(parts._replace(path="/" + db_name))
    return env


@pytest.fixture
def celery_worker_process(transactional_db, tmp_path):
    """A real `celery worker` process on the real Redis broker, bound to the test database."""
    from django.db import connection

    from liminal.celery import app

    app.control.purge()
    log_path = tmp_path / "worker.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "celery", "-A", "liminal", "worker",
                "-Q", "default,ingest,cluster,train,inference", "--pool", "solo",
                "--without-heartbeat", "--without-gossip", "--without-mingle",
                "-n", f"test-{os.getpid()}@%h", "--loglevel", "INFO",
            ],
            cwd=PROJECT_ROOT,
            env=worker_environment(connection.settings_dict["NAME"]),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 90
        while "ready." not in log_path.read_text():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("Celery worker did not start:\n" + log_path.read_text()[-4000:])
            time.sleep(0.2)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
