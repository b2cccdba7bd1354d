"""An ingest worker SIGKILLed in the middle of a file (the OOM killer, kill -9) acknowledges
nothing, and Redis would hand its message to another worker only after the visibility timeout
(hours). The worker started again under the same name (make run's supervisor, a container's
restart policy) returns what its predecessor held to the queue first: the file resumes from its
stored chunks and ends ready, once."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import redis
from django.conf import settings

from apps.knowledge import services, tasks
from apps.knowledge.models import Chunk, KnowledgeFile
from conftest import PROJECT_ROOT, worker_environment

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# A queue of its own, so no other worker of the session takes the file.
QUEUE = f"ingest-killed-{os.getpid()}"
WORKER_NAME = f"{QUEUE}@%h"


def _start_worker(env: dict, log_path) -> subprocess.Popen:
    with open(log_path, "a") as log:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "liminal",
                "worker",
                "-Q",
                QUEUE,
                "--pool",
                "threads",
                "--concurrency",
                "1",
                "--without-heartbeat",
                "--without-gossip",
                "--without-mingle",
                "-n",
                WORKER_NAME,
                "--loglevel",
                "INFO",
            ],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def _document(sections: int) -> bytes:
    return "\n\n".join(
        f"## Log entry {n}\n\nOn day {n} the survey team measured stake {n % 17} at {100 + n} centimetres "
        f"and logged wind from bearing {(n * 37) % 360} degrees before returning to the hut."
        for n in range(sections)
    ).encode()


def _unacked_task_ids(broker) -> set[str]:
    return {json.loads(raw)[0]["headers"]["id"] for raw in broker.hvals("unacked")}


def test_a_file_whose_worker_is_killed_mid_file_is_retried_and_ends_ready_once(
    make_user, test_db_name, tmp_path, monkeypatch
):
    user = make_user()
    monkeypatch.setattr(tasks.ingest_file, "delay", lambda *args, **kwargs: None)  # queued below instead
    file = services.file_upload(actor=user, name="survey-log.md", content=_document(240))
    env = {
        **worker_environment(test_db_name),
        # One chunk per batch (and per transaction): the file is still being embedded when it is killed.
        "KNOWLEDGE_EMBED_BATCH_SIZE": "1",
        "KNOWLEDGE_CHUNK_TARGET_TOKENS": "40",
        "KNOWLEDGE_CHUNK_OVERLAP_TOKENS": "0",
    }
    log_path = tmp_path / "worker.log"
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    worker = _start_worker(env, log_path)
    try:
        task_id = tasks.ingest_file.apply_async(args=[str(file.pk)], queue=QUEUE).id
        deadline = time.monotonic() + 240
        while KnowledgeFile.objects.get(pk=file.pk).chunks_done < 5:
            assert worker.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, "the worker stored no chunks in 4 minutes"
            time.sleep(0.05)
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)
        killed = KnowledgeFile.objects.get(pk=file.pk)
        assert killed.status == KnowledgeFile.Status.PROCESSING and killed.chunks_done < killed.chunks_total
        assert task_id in _unacked_task_ids(broker), "the killed worker's message should still be unacknowledged"

        worker = _start_worker(env, log_path)
        deadline = time.monotonic() + 240
        while (current := KnowledgeFile.objects.get(pk=file.pk)).status not in (
            KnowledgeFile.Status.READY,
            KnowledgeFile.Status.FAILED,
        ):
            assert worker.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, f"the file stayed {current.status}: " + log_path.read_text()[-3000:]
            time.sleep(0.2)
        deadline = time.monotonic() + 30
        while task_id in _unacked_task_ids(broker):  # acknowledged once the task returns
            assert time.monotonic() < deadline, "the retried message was never acknowledged"
            time.sleep(0.1)
    finally:
        if worker.poll() is None:
            worker.terminate()
            worker.wait(timeout=30)
        broker.delete(QUEUE)

    assert current.status == KnowledgeFile.Status.READY and current.error_code == ""
    assert current.attempts == 2, "one killed run, one that finished"
    ordinals = list(Chunk.objects.filter(file=file).values_list("ordinal", flat=True))
    assert len(ordinals) == len(set(ordinals)) == current.chunks_total == current.chunks_done
    log = log_path.read_text()
    assert log.count(f"Task apps.knowledge.tasks.ingest_file[{task_id}] succeeded") == 1, log[-3000:]
