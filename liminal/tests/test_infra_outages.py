"""Valkey and PostgreSQL stopped and started again under a live platform (web server, inference
worker with beat), each while an answer is streaming: the platform answers again without anyone
restarting it, and no answer is left `streaming`.

The platform here has servers of its own (embedded, under a temporary LIMINAL_VAR_DIR): the
machine's shared servers, and the var/ ones other test runs use, are never stopped."""

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest
import requests

from liminal import infra

pytestmark = pytest.mark.slow

PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent
LONG_PROMPT = "Tell me a long story about a lighthouse keeper and the ships she saw."


def _wait_for_log(process, log_path: Path, marker: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while marker not in log_path.read_text(errors="replace"):
        assert process.poll() is None and time.monotonic() < deadline, log_path.read_text(errors="replace")[-4000:]
        time.sleep(0.2)


@pytest.fixture
def platform(tmp_path, monkeypatch):
    """Own PostgreSQL and Valkey, migrated; Daphne and an inference worker running beat, on them."""
    var_dir = tmp_path / "var"
    monkeypatch.setenv("LIMINAL_VAR_DIR", str(var_dir))  # infra.* in this process acts on them too
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DATABASE_", "REDIS_", "LIMINAL_DB", "CELERY_"))
    }
    env.update(
        LIMINAL_VAR_DIR=str(var_dir),
        DJANGO_SETTINGS_MODULE="liminal.settings_test",
        PYTHONUNBUFFERED="1",
        ENGINE_COMPILE_CACHE_DIR=str(PROJECT_ROOT / "var" / "jax-cache"),  # shared: no recompiling
        ENGINE_WARMUP="0",
        ENGINE_BATCH_SLOTS="4",
        ENGINE_MAX_SEQ_LEN="1024",
        CHAT_MAX_TOKENS="300",
        GENERATION_HEARTBEAT_SECONDS="3",
        CHAT_API_TIMEOUT="60",
    )
    pg = infra.ensure_postgres()
    infra.ensure_redis()
    processes = []
    try:
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=PROJECT_ROOT, env=env, check=True
        )
        port = infra._free_port()
        commands = {
            "web": [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "liminal.asgi:application"],
            "worker": [
                *[sys.executable, "-m", "celery", "-A", "liminal", "worker", "-Q", "inference,default"],
                *["--pool", "threads", "--concurrency", "4", "-n", f"outages-{os.getpid()}@%h", "--loglevel", "INFO"],
                *["-B", "-s", str(var_dir / "celerybeat-schedule")],
            ],
        }
        markers = {"web": "Listening on TCP address", "worker": "ready."}
        for name, command in commands.items():
            log_path = tmp_path / f"{name}.log"
            with open(log_path, "w") as log:
                process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
            processes.append(process)
            _wait_for_log(process, log_path, markers[name])
        yield {"url": f"http://127.0.0.1:{port}", "pg": pg, "logs": tmp_path}
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        infra.stop_postgres()
        infra.stop_redis()


def _answers(pg) -> dict[str, int]:
    with psycopg.connect(host=pg["host"], user=pg["user"], dbname=infra.DATABASE_NAME) as conn:
        rows = conn.execute(
            "SELECT status, count(*) FROM conversations_message WHERE role = 'assistant' GROUP BY status"
        ).fetchall()
    return dict(rows)


def _streaming_with_text(pg) -> bool:
    with psycopg.connect(host=pg["host"], user=pg["user"], dbname=infra.DATABASE_NAME) as conn:
        return bool(
            conn.execute(
                "SELECT 1 FROM conversations_message WHERE role = 'assistant' AND status = 'streaming' "
                "AND length(content) > 20"
            ).fetchone()
        )


def _chat(session, url, content, timeout=90) -> requests.Response:
    return session.post(f"{url}/v1/chat", json={"message": {"content": content}}, timeout=timeout)


def _answers_again(session, url, what: str, timeout: float = 180) -> dict:
    """Ask until a complete answer comes back; nobody restarts anything meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            response = _chat(session, url, "Say hello in five words.")
            if response.status_code == 200 and response.json()["data"]["status"] == "complete":
                return response.json()["data"]
            outcome = f"{response.status_code} {response.text[:300]}"
        except requests.RequestException as exc:
            outcome = repr(exc)
        assert time.monotonic() < deadline, f"no answer after {what}: {outcome}"
        time.sleep(2)


def _outage_mid_answer(session, platform, stop, start, what: str) -> None:
    url, pg = platform["url"], platform["pg"]
    long_answer = threading.Thread(target=lambda: _try(lambda: _chat(session, url, LONG_PROMPT)), daemon=True)
    long_answer.start()
    deadline = time.monotonic() + 120
    while not _streaming_with_text(pg):
        assert time.monotonic() < deadline, "the long answer never started streaming"
        time.sleep(0.1)
    stop()
    deadline = time.monotonic() + 30
    while _try(lambda: requests.get(f"{url}/healthz", timeout=10).status_code) != 503:  # the web felt it
        assert time.monotonic() < deadline, f"/healthz never noticed {what}"
        time.sleep(0.2)
    start()
    _answers_again(session, url, what)
    long_answer.join(timeout=90)
    deadline = time.monotonic() + 60
    while (counts := _answers(pg)).get("streaming"):  # the reaper (beat, every 10 s) settles a lost one
        assert time.monotonic() < deadline, f"an answer was left streaming after {what}: {counts}"
        time.sleep(0.5)


def _try(call):
    """The call's result, or None when the request failed (as one may during an outage)."""
    try:
        return call()
    except requests.RequestException:
        return None


def test_valkey_and_postgres_restarted_mid_answer_the_platform_recovers_and_nothing_stays_streaming(platform):
    url = platform["url"]
    session = requests.Session()
    signup = session.post(
        f"{url}/v1/auth/signup", json={"email": "outage@example.com", "password": "correct horse battery"}, timeout=60
    )
    assert signup.status_code == 201, signup.text
    session.headers["Authorization"] = f"Bearer {signup.json()['data']['access_token']}"
    _answers_again(session, url, "start-up", timeout=300)

    _outage_mid_answer(session, platform, infra.stop_redis, infra.ensure_redis, "a Valkey restart")
    _outage_mid_answer(session, platform, infra.stop_postgres, infra.ensure_postgres, "a PostgreSQL restart")

    counts = _answers(platform["pg"])
    assert set(counts) <= {"complete", "failed"}, counts
    assert counts["complete"] >= 3, counts  # one answer before and one after each restart
