"""Persona adapters: one per user, promotion as a data change, rollback, jobs one at a time,
and the API's isolation."""

import pytest

from apps.training import adapters, selectors
from apps.training.models import AdapterVersion, TrainingJob
from liminal.errors import Conflict

pytestmark = pytest.mark.django_db


def promoted(adapter, number, **fields):
    version = AdapterVersion.objects.create(
        owner=adapter.owner, adapter=adapter, version=number, fs_dir=f"/adapters/v{number:04d}", **fields
    )
    return adapters.version_promote(version=version)


def test_promotion_moves_the_current_version_and_serving_follows(make_user):
    user, other = make_user(), make_user()
    adapter = adapters.persona_adapter_ensure(actor=user)
    assert adapters.persona_adapter_ensure(actor=user).pk == adapter.pk
    assert selectors.serving_adapters(actor=user) == []
    promoted(adapter, 1)
    adapter.refresh_from_db()
    assert adapter.body["current_version"] == 1
    assert selectors.serving_adapters(actor=user) == [
        {
            "name": f"persona-{user.pk}",
            "adapter_id": str(adapter.pk),
            "version": 1,
            "fs_dir": "/adapters/v0001",
            "weight": 1.0,
        }
    ]
    assert selectors.serving_adapters(actor=other) == []


def test_rollback_goes_to_the_previous_clean_version_or_the_base(make_user):
    user = make_user()
    adapter = adapters.persona_adapter_ensure(actor=user)
    promoted(adapter, 1)
    promoted(adapter, 2, tainted_at=None)
    assert adapters.adapter_rollback(actor=user, adapter=adapter).version == 1
    adapter.refresh_from_db()
    assert adapter.body["current_version"] == 1
    assert AdapterVersion.objects.get(adapter=adapter, version=2).status == "rolled_back"
    assert adapters.adapter_rollback(actor=user, adapter=adapter) is None
    adapter.refresh_from_db()
    assert adapter.body["current_version"] is None and selectors.serving_adapters(actor=user) == []
    with pytest.raises(Conflict):
        adapters.adapter_rollback(actor=user, adapter=adapter)


def test_one_job_per_adapter_at_a_time(make_user):
    user = make_user()
    job = adapters.training_job_create(actor=user)
    with pytest.raises(Conflict):
        adapters.training_job_create(actor=user)
    job.status = TrainingJob.Status.PROMOTED
    job.save()
    assert adapters.training_job_create(actor=user).pk != job.pk


def test_the_adapter_api_is_the_users_own(
    api_client, login_tokens, make_user, monkeypatch, django_capture_on_commit_callbacks
):
    from celery import current_app

    queued = []
    monkeypatch.setattr(current_app, "send_task", lambda name, args, queue: queued.append(args[0]))
    alice, bob = make_user(), make_user()
    adapter = adapters.persona_adapter_ensure(actor=alice)
    promoted(adapter, 1)
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {login_tokens(alice)['access_token']}")
    listed = api_client.get("/v1/adapters").json()["data"]["items"]
    assert [(a["id"], a["current_version"]) for a in listed] == [(str(adapter.pk), 1)]
    detail = api_client.get(f"/v1/adapters/{adapter.pk}").json()["data"]
    assert [v["version"] for v in detail["versions"]] == [1]
    with django_capture_on_commit_callbacks(execute=True):
        started = api_client.post("/v1/training/jobs", {}, format="json")
    assert started.status_code == 202 and queued == [started.json()["data"]["id"]]
    assert api_client.post("/v1/training/jobs", {}, format="json").status_code == 409
    bad = api_client.post(f"/v1/adapters/{adapter.pk}/rollback", {"to_version": 0}, format="json")
    assert bad.status_code == 400 and "to_version" in bad.json()["error"]["details"]

    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {login_tokens(bob)['access_token']}")
    assert api_client.get("/v1/adapters").json()["data"]["items"] == []
    assert api_client.get(f"/v1/adapters/{adapter.pk}").status_code == 404
    assert api_client.post(f"/v1/adapters/{adapter.pk}/rollback", {}, format="json").status_code == 404
    assert api_client.get("/v1/training/jobs").json()["data"]["items"] == []
    adapter.refresh_from_db()
    assert adapter.body["current_version"] == 1
