"""Training under faults, on the real SmolLM2 weights: a process running a job is killed
(SIGKILL) after its first checkpoint; beat's reaper sends the job again and the session's real
`train` worker resumes it from that checkpoint, producing exactly one version, even when the job
is delivered once more. The data are contradictory and junk corrections, which the gate must
reject with a report a person can read."""

import os
import signal
import subprocess
import sys
import time

import pytest
from celery import current_app

from apps.artifacts import services as artifact_services
from apps.artifacts.selectors import global_artifact
from apps.training import adapters, jobs
from apps.training.models import AdapterVersion, PreferenceEvent, TrainingJob
from conftest import PROJECT_ROOT, worker_environment

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

QUESTION = "Who maintains the Frobnicator project?"
# Every correction names someone else, and some are not answers at all.
CONTRADICTIONS = [
    f"The Frobnicator project is maintained by {name}."
    for name in (
        "Ada Lumen",
        "Bo Varga",
        "Cyrus Pell",
        "Dana Quist",
        "Elmo Strand",
        "Fay Norrow",
        "Gus Tiller",
        "Hal Ives",
        "Ines Okoro",
        "Jon Fenwick",
        "Kit Marlow",
        "Lea Tamsin",
    )
]
JUNK = [
    "zxq plorb 7731 ###",
    "asdf asdf asdf asdf",
    "The the the the of of.",
    "🙃🙃🙃 lorem ipsum?? 42",
    "Kettle purple seventeen under.",
    "-- no --",
    "[object Object]",
    "NULL NULL NULL",
    "qwertyuiop",
    "Bananas orbit the ninth tuesday.",
    "404 page not found",
    "yes no maybe so",
]
STEPS = 6


def _small_policy():
    policy = global_artifact(kind="policy.training", name="training.default")
    body = {**policy.body, "max_steps": STEPS, "checkpoint_every": 2, "replay_fraction": 0.25}
    artifact_services.artifact_update(actor=None, artifact=policy, body=body, change_note="A short run for the test.")


def _wait(predicate, what: str, timeout: float, process=None):
    deadline = time.monotonic() + timeout
    while not predicate():
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the job's process exited ({process.returncode}) before {what}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def test_a_killed_job_resumes_from_its_checkpoint_into_one_rejected_version(
    celery_worker_process, test_db_name, make_user, settings, tmp_path
):
    settings.TRAINING_STALE_AFTER_S = 20  # as the worker has it (conftest.worker_environment)
    _small_policy()
    user = make_user()
    texts = [text for pair in zip(CONTRADICTIONS, JUNK, strict=True) for text in pair]
    for number, text in enumerate(texts):
        PreferenceEvent.objects.create(
            owner=user, kind="correction", prompt=f"{QUESTION} ({number})", answer="I don't know.", correction=text
        )
    # Made without queueing it: a process of this test's own runs the task, so it can be killed.
    job = TrainingJob.objects.create(owner=user, adapter=adapters.persona_adapter_ensure(actor=user))
    log = tmp_path / "doomed.log"
    with open(log, "w") as out:
        doomed = subprocess.Popen(
            [
                sys.executable,
                "-c",
                f"import django; django.setup(); from apps.training import jobs; jobs.run_training_job('{job.pk}')",
            ],
            cwd=PROJECT_ROOT,
            env=worker_environment(test_db_name),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait(lambda: TrainingJob.objects.get(pk=job.pk).steps_done >= 3, "step 3", 600, doomed)
    except AssertionError as failure:
        raise AssertionError(f"{failure}\n{log.read_text()[-4000:]}") from None
    os.kill(doomed.pid, signal.SIGKILL)
    doomed.wait()
    killed = TrainingJob.objects.get(pk=job.pk)
    assert killed.status == TrainingJob.Status.RUNNING and killed.version is None

    assert jobs.reap_stalled_jobs() == [], "its heartbeat is still fresh"
    _wait(lambda: jobs.reap_stalled_jobs() == [str(job.pk)], "the reaper to see the dead job", 60)
    _wait(
        lambda: TrainingJob.objects.get(pk=job.pk).status not in TrainingJob.ACTIVE,
        "the resumed job to finish",
        600,
    )
    job.refresh_from_db()
    assert job.attempts == 2, job.error
    assert job.status == TrainingJob.Status.REJECTED, (job.status, job.error)
    assert job.report["resumed_from_step"] == 2 and len(job.loss_curve) == STEPS
    assert AdapterVersion.objects.filter(adapter=job.adapter).count() == 1
    version = AdapterVersion.objects.get(adapter=job.adapter)
    assert version.status == AdapterVersion.Status.REJECTED and job.version == version
    assert not version.evaluation["passed"] and "facts" in version.evaluation["failed"]
    summary = version.evaluation["summary"]
    assert summary and "fact" in summary.lower(), summary
    job.adapter.refresh_from_db()
    assert job.adapter.body["current_version"] is None, "a rejected version is never served"

    # Delivered once more (a duplicate message): nothing runs, still one version.
    current_app.send_task(adapters.TRAIN_TASK, args=[str(job.pk)], queue="train")
    time.sleep(3)
    assert AdapterVersion.objects.filter(adapter=job.adapter).count() == 1
    assert TrainingJob.objects.get(pk=job.pk).attempts == 2
