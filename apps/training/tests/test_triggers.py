"""Training starts by itself when the policy's triggers say so (threshold, satisfaction drop,
schedule), never twice at once, never inside the cool-down; a dead job's worker is replaced; the
next job never builds on a version trained on forgotten signals; only an admin overrules the gate."""

from datetime import timedelta

import pytest
from celery import current_app
from django.utils import timezone

from apps.artifacts import services as artifact_services
from apps.artifacts.selectors import global_artifact
from apps.conversations import services as conversation_services
from apps.conversations.models import Message
from apps.training import adapters, jobs, selectors, services, skills, triggers
from apps.training.models import AdapterVersion, PreferenceEvent, TrainingJob
from liminal.errors import Conflict, Forbidden

pytestmark = pytest.mark.django_db


@pytest.fixture
def sent(monkeypatch):
    """Tasks sent to the broker, as (name, first argument)."""
    calls = []
    monkeypatch.setattr(current_app, "send_task", lambda name, args, queue: calls.append((name, args[0], queue)))
    return calls


def signal(user, kind=PreferenceEvent.Kind.CORRECTION, **fields):
    return PreferenceEvent.objects.create(
        owner=user, kind=kind, prompt="Who maintains Frobnicator?", answer="I don't know.", correction="Ada.", **fields
    )


def set_triggers(**values):
    policy = global_artifact(kind="policy.training", name="training.default")
    body = {**policy.body, "triggers": {**policy.body.get("triggers", {}), **values}}
    artifact_services.artifact_update(actor=None, artifact=policy, body=body, change_note="test")


def test_the_threshold_of_new_signals_starts_one_job_after_the_signal_that_reaches_it(
    make_user, sent, django_capture_on_commit_callbacks
):
    set_triggers(new_signals=3)
    user, other = make_user(), make_user()
    for _ in range(5):
        signal(other, kind=PreferenceEvent.Kind.THUMBS_DOWN)  # teaches nothing by itself
    for _ in range(2):
        signal(user)
    assert triggers.after_signal(actor=user) is None and sent == []
    signal(user)
    job = triggers.after_signal(actor=user)
    assert job.trigger == TrainingJob.Trigger.THRESHOLD and job.owner == user
    assert triggers.after_signal(actor=user) is None  # one at a time
    job.status, job.finished_at = TrainingJob.Status.PROMOTED, timezone.now()
    job.save()
    for _ in range(3):
        signal(user)
    assert triggers.after_signal(actor=user) is None, "inside the cool-down"
    later = timezone.now() + timedelta(minutes=31)
    assert triggers.due_trigger(actor=user, now=later) == TrainingJob.Trigger.THRESHOLD
    assert triggers.due_trigger(actor=other) is None


def test_a_stored_correction_checks_the_triggers_once_committed(make_user, sent, django_capture_on_commit_callbacks):
    set_triggers(new_signals=1)
    user = make_user()
    _, _, answer = conversation_services.chat_turn_start(actor=user, content="Who maintains Frobnicator?")
    conversation_services.generation_finish(
        message=answer, content="I don't know.", status=Message.Status.COMPLETE, receipt={}
    )
    answer.refresh_from_db()
    with django_capture_on_commit_callbacks(execute=True):
        services.feedback_record(actor=user, message=answer, feedback="negative", corrected_text="Ada Lumen.")
    job = TrainingJob.objects.get(owner=user)
    assert job.trigger == TrainingJob.Trigger.THRESHOLD
    event = job.owner.preference_events.get()
    # The signal is also sent to be clustered, on its own queue.
    assert sorted(sent) == sorted(
        [(adapters.TRAIN_TASK, str(job.pk), "train"), (skills.CLUSTER_EVENT_TASK, str(event.pk), "cluster")]
    )


def test_a_drop_in_satisfaction_starts_a_job(make_user, sent):
    set_triggers(new_signals=1000, schedule_hours=None, satisfaction={"window": 4, "drop": 0.5})
    user = make_user()
    for _ in range(4):
        signal(user, kind=PreferenceEvent.Kind.THUMBS_UP)
    for _ in range(3):
        signal(user, kind=PreferenceEvent.Kind.THUMBS_DOWN)
    assert triggers.due_trigger(actor=user) is None  # a window is not full yet
    signal(user, kind=PreferenceEvent.Kind.THUMBS_DOWN)
    assert triggers.satisfaction_drop(actor=user, window=4) == 1.0
    assert triggers.due_trigger(actor=user) == TrainingJob.Trigger.SATISFACTION


def test_the_schedule_trains_what_is_new_once_the_last_job_is_old_enough(
    make_user, sent, django_capture_on_commit_callbacks
):
    set_triggers(new_signals=1000, schedule_hours=24)
    user = make_user()
    assert triggers.check_all() == []  # nothing to train on
    signal(user)
    with django_capture_on_commit_callbacks(execute=True):
        [job] = triggers.check_all()
    assert job.trigger == TrainingJob.Trigger.SCHEDULE and sent == [(adapters.TRAIN_TASK, str(job.pk), "train")]
    job.status, job.finished_at = TrainingJob.Status.PROMOTED, timezone.now()
    job.save()
    signal(user)
    assert triggers.check_all() == []
    assert triggers.due_trigger(actor=user, now=timezone.now() + timedelta(hours=25)) == TrainingJob.Trigger.SCHEDULE


def test_a_job_whose_worker_died_is_sent_again_then_failed_after_three_deaths(make_user, sent, settings):
    settings.TRAINING_STALE_AFTER_S = 60
    user = make_user()
    job = adapters.training_job_create(actor=user)
    assert jobs._claim(job.pk) is not None
    assert jobs._claim(job.pk) is None, "a live run is not claimed twice"
    assert jobs.reap_stalled_jobs() == []
    later = timezone.now() + timedelta(seconds=61)
    assert jobs.reap_stalled_jobs(now=later) == [str(job.pk)]
    TrainingJob.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=61))
    assert jobs._claim(job.pk).attempts == 2
    TrainingJob.objects.filter(pk=job.pk).update(attempts=3)
    assert jobs.reap_stalled_jobs(now=later) == []
    job.refresh_from_db()
    assert job.status == TrainingJob.Status.FAILED and "stopped 3 times" in job.error


def test_a_queued_job_whose_message_was_lost_is_sent_again_once_per_window(
    make_user, sent, settings, django_capture_on_commit_callbacks
):
    settings.TRAINING_REQUEUE_AFTER_S = 900
    user = make_user()
    with django_capture_on_commit_callbacks(execute=True):
        job = adapters.training_job_create(actor=user)
    assert sent == [(adapters.TRAIN_TASK, str(job.pk), "train")]
    job.refresh_from_db()
    assert job.sent_at is not None
    # The broker lost that message (a Valkey crash): the job stays queued, and nothing else trains
    # for this adapter while it does, until the reaper sends it again.
    assert jobs.reap_stalled_jobs() == [], "waiting less than the window is waiting its turn"
    later = job.sent_at + timedelta(seconds=901)
    assert jobs.reap_stalled_jobs(now=later) == [str(job.pk)]
    assert sent[-1] == (adapters.TRAIN_TASK, str(job.pk), "train") and len(sent) == 2
    assert jobs.reap_stalled_jobs(now=later + timedelta(seconds=60)) == [], "once per window, not every pass"
    assert jobs.reap_stalled_jobs(now=later + timedelta(seconds=901)) == [str(job.pk)]
    # However many copies arrive, one worker runs it.
    assert jobs._claim(job.pk) is not None and jobs._claim(job.pk) is None
    assert jobs.reap_stalled_jobs() == [], "running with a fresh heartbeat"


def version(adapter, number, parent=None, **fields):
    return AdapterVersion.objects.create(
        owner=adapter.owner, adapter=adapter, version=number, parent=parent, fs_dir=f"/v{number}", **fields
    )


def test_the_next_job_builds_on_the_last_version_untouched_by_forgotten_signals(make_user):
    user = make_user()
    adapter = adapters.persona_adapter_ensure(actor=user)
    first_signal, second_signal = signal(user), signal(user)
    v1 = adapters.version_promote(version=version(adapter, 1))
    v1.trained_on.set([first_signal])
    v2 = adapters.version_promote(version=version(adapter, 2, parent=v1))
    v2.trained_on.set([first_signal, second_signal])
    adapter.refresh_from_db()
    assert selectors.training_parent(adapter=adapter) == v2

    services.event_forget(actor=user, event=second_signal)
    assert AdapterVersion.objects.get(pk=v2.pk).tainted_at is not None
    assert AdapterVersion.objects.get(pk=v1.pk).tainted_at is None
    assert selectors.training_parent(adapter=adapter) == v1

    services.event_forget(actor=user, event=first_signal)
    assert selectors.training_parent(adapter=adapter) is None, "v1 learnt the forgotten signal too"


def test_a_child_of_a_tainted_version_is_not_clean_either(make_user):
    user = make_user()
    adapter = adapters.persona_adapter_ensure(actor=user)
    v1 = adapters.version_promote(version=version(adapter, 1, tainted_at=timezone.now()))
    adapters.version_promote(version=version(adapter, 2, parent=v1))
    adapter.refresh_from_db()
    assert selectors.training_parent(adapter=adapter) is None


def test_only_an_admin_promotes_what_the_gate_rejected(make_user):
    user, admin, other = make_user(), make_user(role="admin"), make_user()
    adapter = adapters.persona_adapter_ensure(actor=user)
    passed = adapters.version_promote(version=version(adapter, 1, evaluation={"passed": True}))
    rejected = version(adapter, 2, parent=passed, status="rejected", evaluation={"passed": False})
    with pytest.raises(Forbidden):
        adapters.version_approve(actor=user, version=rejected)
    with pytest.raises(Exception) as missing:
        adapters.version_approve(actor=other, version=rejected)
    assert missing.type.__name__ == "NotFound"
    adapters.version_approve(actor=admin, version=rejected)
    rejected.refresh_from_db()
    adapter.refresh_from_db()
    assert adapter.body["current_version"] == 2 and rejected.status == "promoted"
    assert rejected.evaluation["approved_by"] == admin.get_username()
    assert AdapterVersion.objects.get(pk=passed.pk).status == "promoted"  # rolling back returns to it
    with pytest.raises(Conflict):
        adapters.version_approve(actor=admin, version=rejected)
    adapters.version_approve(actor=user, version=passed)  # the owner brings back one that passed
    adapter.refresh_from_db()
    assert adapter.body["current_version"] == 1
    assert AdapterVersion.objects.get(pk=rejected.pk).status == "rolled_back"
    AdapterVersion.objects.filter(pk=rejected.pk).update(tainted_at=timezone.now())
    with pytest.raises(Conflict):
        adapters.version_approve(actor=admin, version=AdapterVersion.objects.get(pk=rejected.pk))
