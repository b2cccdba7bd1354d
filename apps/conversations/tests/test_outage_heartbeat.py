"""An answer's heartbeat outlives a Redis outage: the thread logs once, retries with a growing
but short delay, and beats again once Redis answers, so an answer that survives the outage is
not reaped as stalled."""

import logging
import time

import pytest
import redis

from apps.accounts import ratelimit
from apps.conversations import generation, services, state
from apps.conversations.models import Message
from liminal import infra


class FlakyRedis:
    """Refuses the first `failures` writes as a stopped Redis would, then stores them."""

    def __init__(self, failures: int):
        self.failures = failures
        self.tries = 0
        self.values = {}

    def set(self, key, value, ex=None):
        self.tries += 1
        if self.failures:
            self.failures -= 1
            raise redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6399. Connection refused.")
        self.values[key] = value


def _wait_for(condition, what: str, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, what
        time.sleep(0.02)
    return result


def _warnings(caplog):
    return [r for r in caplog.records if r.name == generation.logger.name and r.levelno == logging.WARNING]


def test_the_heartbeat_keeps_trying_through_connection_errors_and_logs_once(settings, monkeypatch, caplog):
    settings.GENERATION_HEARTBEAT_SECONDS = 0.3
    flaky = FlakyRedis(failures=4)
    monkeypatch.setattr(state, "state_redis", lambda: flaky)
    heartbeat = generation._Heartbeat("answer-1")
    heartbeat.start()
    try:
        _wait_for(lambda: state.heartbeat_key("answer-1") in flaky.values, "the heartbeat never beat again")
        assert heartbeat.is_alive()
        assert flaky.tries >= 5
        assert len(_warnings(caplog)) == 1, [r.getMessage() for r in _warnings(caplog)]
        beats = flaky.tries
        _wait_for(lambda: flaky.tries > beats + 1, "the heartbeat stopped after Redis came back")
    finally:
        heartbeat.stopped.set()
        heartbeat.join(timeout=5)
    assert not heartbeat.is_alive()


def test_the_retries_back_off_but_stay_short(settings):
    settings.GENERATION_HEARTBEAT_SECONDS = 15  # a beat every 5 s
    heartbeat = generation._Heartbeat("answer-1")
    assert [heartbeat.retry_delay(n) for n in range(1, 6)] == [0.25, 0.5, 1.0, 1.0, 1.0]
    assert heartbeat.retry_delay(100_000) == 1.0  # hours of outage: no overflow, Redis found at once
    settings.GENERATION_HEARTBEAT_SECONDS = 1.5  # a beat every 0.5 s: never wait longer than one
    assert [generation._Heartbeat("answer-1").retry_delay(n) for n in range(1, 4)] == [0.25, 0.5, 0.5]


@pytest.mark.django_db
def test_an_answer_streaming_through_a_valkey_restart_keeps_its_heartbeat_and_is_not_reaped(
    make_user, settings, monkeypatch, tmp_path, caplog
):
    """A real (private) Valkey stopped and started again under a beating answer."""
    settings.GENERATION_HEARTBEAT_SECONDS = 3
    monkeypatch.setenv("LIMINAL_VAR_DIR", str(tmp_path))
    url = infra.ensure_redis()
    monkeypatch.setattr(ratelimit, "_client", redis.Redis.from_url(url + "/0", socket_timeout=2))
    heartbeat = None
    try:
        _, _, reply = services.chat_turn_start(actor=make_user(), content="Tell me a long story.")
        assert services.generation_started(message=reply)
        heartbeat = generation._Heartbeat(reply.pk)
        heartbeat.start()

        assert infra.stop_redis()
        _wait_for(lambda: _warnings(caplog), "the heartbeat never felt the outage")
        restarted = time.time()
        assert infra.ensure_redis() == url
        _wait_for(
            lambda: float(ratelimit._client.get(state.heartbeat_key(reply.pk)) or 0) > restarted,
            "no heartbeat after Valkey came back",
        )
        assert heartbeat.is_alive()
        assert services.generations_reap_stalled() == 0
        reply.refresh_from_db()
        assert reply.status == Message.Status.STREAMING
    finally:
        if heartbeat is not None:
            heartbeat.stopped.set()
            heartbeat.join(timeout=5)
        infra.stop_redis()
