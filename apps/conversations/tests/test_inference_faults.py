"""An inference worker killed (SIGKILL) in the middle of an answer, on the real SmolLM2 weights:
its listeners get an error event, and the answer ends `failed` with the text it had streamed so
far, through the stalled-answer reaper beat runs every 10 s. (That `make run` starts the worker
again is liminal/tests/test_run.py's.)"""

import os
import signal
import subprocess
import sys
import time

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from apps.conversations import services, state
from apps.conversations.models import Message
from apps.conversations.streaming import generation_group
from conftest import PROJECT_ROOT, worker_environment

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_a_worker_killed_mid_answer_fails_it_with_its_partial_text_and_an_error_event(make_user, test_db_name):
    user = make_user()
    # Stored without queueing: this test's own process generates it, so it can be killed.
    _, _, reply = services.chat_turn_start(actor=user, content="Tell me a long story about a lighthouse keeper.")
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(generation_group(reply.stream_key), channel)

    env = {**worker_environment(test_db_name), "CHAT_MAX_TOKENS": "400"}
    worker = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import django; django.setup(); from apps.conversations.generation import run_reply; "
            f"run_reply('{reply.pk}')",
        ],
        cwd=PROJECT_ROOT,
        env=env,
    )
    try:
        deadline = time.monotonic() + 240
        while len(Message.objects.get(pk=reply.pk).content.split()) < 8:  # some of the answer is saved
            assert worker.poll() is None, "the generating process ended before it was killed"
            assert time.monotonic() < deadline, "no partial answer was saved in 4 minutes"
            time.sleep(0.2)
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
    partial = Message.objects.get(pk=reply.pk)
    assert partial.status == Message.Status.STREAMING and partial.content

    # Its heartbeat lapses (3 s here); beat's reaper then settles it.
    deadline = time.monotonic() + 30
    while state.heartbeat_alive(reply.pk):
        assert time.monotonic() < deadline, "the dead worker's heartbeat never lapsed"
        time.sleep(0.5)
    assert services.generations_reap_stalled() == 1
    failed = Message.objects.get(pk=reply.pk)
    assert failed.status == Message.Status.FAILED and failed.content == partial.content
    assert "stopped unexpectedly" in failed.error

    events = []
    deadline = time.monotonic() + 10
    while not any(e.get("type") == "gen.done" for e in events):
        assert time.monotonic() < deadline, f"no done event reached the listeners: {events[-3:]}"
        events.append(async_to_sync(layer.receive)(channel))
    done = next(e for e in events if e.get("type") == "gen.done")
    assert done["status"] == "failed" and "stopped unexpectedly" in done["error"]
