"""The Adapters pages: versions with their gate report and loss curve, the running job's progress,
Train now, Serve this version and Roll back. Another user's adapter is a 404; only an admin sees
everyone's and may overrule the gate."""

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from apps.accounts.models import User
from apps.conversations.charts import line_chart
from apps.training import adapters, selectors
from apps.training.models import AdapterVersion, TrainingJob

pytestmark = pytest.mark.django_db

PASSED = {
    "passed": True,
    "summary": "The candidate passed the gate: all 3 checks passed.",
    "checks": {
        "improvement": {"passed": True, "detail": "mean gain +0.41 nats/token, 95% lower bound +0.30"},
        "facts": {"passed": True, "detail": "8 of 8 answers contain the corrected fact"},
        "retention": {"passed": True, "detail": "0.998 of the current log-probability (at least 0.95)"},
    },
    "train_seconds": 96.4,
    "tokens_per_second": 410.0,
}
REJECTED = {
    "passed": False,
    "summary": "The candidate did not pass the gate.",
    "checks": {
        "improvement": {"passed": False, "detail": "mean gain -0.20 nats/token, 95% lower bound -0.35"},
        "retention": {"passed": True, "detail": "0.990 of the current log-probability (at least 0.95)"},
    },
}


@pytest.fixture(autouse=True)
def no_queue(monkeypatch):
    from celery import current_app

    sent = []
    monkeypatch.setattr(current_app, "send_task", lambda name, args, queue: sent.append((name, args, queue)))
    return sent


def version(adapter, number, evaluation, status, **fields):
    return AdapterVersion.objects.create(
        owner=adapter.owner,
        adapter=adapter,
        version=number,
        fs_dir=f"/adapters/v{number:04d}",
        evaluation=evaluation,
        status=status,
        loss_curve=[2.4, 1.9, 1.1, 0.6, 0.3],
        **fields,
    )


def trained(user):
    """An adapter serving v1 (passed) with a rejected v2."""
    adapter = adapters.persona_adapter_ensure(actor=user)
    adapters.version_promote(version=version(adapter, 1, PASSED, AdapterVersion.Status.CANDIDATE))
    rejected = version(adapter, 2, REJECTED, AdapterVersion.Status.REJECTED)
    adapter.refresh_from_db()
    return adapter, rejected


def test_the_page_shows_versions_gate_reports_and_loss_curves(client, make_user):
    user = make_user()
    adapter, _ = trained(user)
    client.force_login(user)
    listing = client.get("/adapters/").content.decode()
    assert f'href="/adapters/{adapter.pk}/"' in listing and "serving v1" in listing
    html = client.get(f"/adapters/{adapter.pk}/").content.decode()
    assert "Version 2" in html and "rejected by the gate" in html and "mean gain -0.20" in html
    assert "Version 1" in html and "Passed the gate" in html and "Trained in 96 s at 410 tokens/s" in html
    # Two loss curves drawn as SVG, labelled for screen readers.
    assert html.count("<polyline") == 2 and "Training loss over 5 steps, from 2.400 to 0.300" in html
    # The owner may not overrule the gate: no button to serve the rejected version.
    assert "Approve over the gate" not in html
    assert html.count('action="/adapters/versions/') == 0  # v1 is being served, v2 was rejected


def test_the_loss_chart_scales_the_curve_into_the_plot():
    chart = line_chart([4.0, 2.0, 1.0])
    points = [tuple(map(float, p.split(","))) for p in chart["points"].split()]
    assert [x for x, _ in points] == sorted(x for x, _ in points) and len(points) == 3
    top, bottom = chart["plot"]["top"], chart["plot"]["bottom"]
    assert points[0][1] == pytest.approx(top) and top < points[-1][1] < bottom
    assert [t["label"] for t in chart["x_ticks"]] == ["1", "3"]
    assert line_chart([]) is None and line_chart([float("nan")]) is None
    single = line_chart([0.5])
    assert single["steps"] == 1 and len(single["points"].split()) == 1


def test_train_now_queues_one_job_and_shows_its_progress(
    client, make_user, no_queue, django_capture_on_commit_callbacks
):
    user = make_user()
    client.force_login(user)
    assert "No adapter yet" in client.get("/adapters/").content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/adapters/train/")
    adapter = selectors.persona_adapter(actor=user)
    assert response.status_code == 302 and response["Location"] == f"/adapters/{adapter.pk}/"
    assert [args for _, args, queue in no_queue if queue == "train"] == [[str(TrainingJob.objects.get(owner=user).pk)]]
    page = client.get(response["Location"]).content.decode()
    assert "Training queued" in page and "Waiting for a training worker" in page
    # A second press while it is queued is refused with a message, not a second job.
    page = client.post("/adapters/train/", follow=True).content.decode()
    assert "already queued or running" in page and TrainingJob.objects.filter(owner=user).count() == 1

    job = TrainingJob.objects.get(owner=user)
    started = timezone.now() - timedelta(seconds=30)
    job.status, job.started_at, job.heartbeat_at = TrainingJob.Status.RUNNING, started, started + timedelta(seconds=30)
    job.steps_done, job.steps_total, job.loss_curve = 10, 30, [2.0] * 10
    job.save()
    progress = client.get(f"/adapters/{adapter.pk}/progress/?job={job.pk}", HTTP_HX_REQUEST="true")
    text = progress.content.decode()
    assert progress.status_code == 200 and 'aria-valuenow="33"' in text and "step 10 of 30" in text
    assert "about 1 min of training left" in text  # 3 s a step, 20 steps to go
    assert f'hx-get="/adapters/{adapter.pk}/progress/?job={job.pk}"' in text
    job.status = TrainingJob.Status.PROMOTED
    job.save()
    finished = client.get(f"/adapters/{adapter.pk}/progress/?job={job.pk}", HTTP_HX_REQUEST="true")
    assert finished.status_code == 204 and finished["HX-Refresh"] == "true"


def test_roll_back_and_bring_a_version_back(client, make_user):
    user = make_user()
    adapter, _ = trained(user)
    v3 = version(adapter, 3, PASSED, AdapterVersion.Status.CANDIDATE)
    adapters.version_promote(version=v3)
    client.force_login(user)
    page = client.post(f"/adapters/{adapter.pk}/rollback/", follow=True).content.decode()
    assert "answers now use version 1" in page
    adapter.refresh_from_db()
    assert adapter.body["current_version"] == 1
    # v3 passed the gate: its owner may serve it again.
    assert f'action="/adapters/versions/{v3.pk}/serve/"' in page
    page = client.post(f"/adapters/versions/{v3.pk}/serve/", follow=True).content.decode()
    assert "Version 3 is now used" in page
    adapter.refresh_from_db()
    assert adapter.body["current_version"] == 3


def test_only_an_admin_overrules_the_gate(client, make_user):
    user, admin = make_user(), make_user(role=User.Role.ADMIN)
    adapter, rejected = trained(user)
    client.force_login(user)
    page = client.post(f"/adapters/versions/{rejected.pk}/serve/", follow=True).content.decode()
    assert "Only an admin can promote a version the gate rejected" in page
    adapter.refresh_from_db()
    assert adapter.body["current_version"] == 1

    client.force_login(admin)
    everyone = client.get("/adapters/?scope=all").content.decode()
    assert user.email in everyone and f"/adapters/{adapter.pk}/" in everyone
    assert f"/adapters/{adapter.pk}/" not in client.get("/adapters/").content.decode()  # "Mine" is the admin's own
    page = client.get(f"/adapters/{adapter.pk}/").content.decode()
    assert "Approve over the gate" in page and "Train now" not in re.sub(r"<p class=\"muted\">.*?</p>", "", page)
    page = client.post(f"/adapters/versions/{rejected.pk}/serve/", follow=True).content.decode()
    assert "Version 2 is now used" in page
    rejected.refresh_from_db()
    adapter.refresh_from_db()
    assert adapter.body["current_version"] == 2 and rejected.evaluation["approved_by"] == admin.get_username()
    # An admin rolls it back again.
    client.post(f"/adapters/{adapter.pk}/rollback/")
    adapter.refresh_from_db()
    assert adapter.body["current_version"] == 1


def test_another_users_adapter_is_a_404(client, make_user):
    alice, bob = make_user(), make_user()
    adapter, rejected = trained(alice)
    client.force_login(bob)
    assert f"/adapters/{adapter.pk}/" not in client.get("/adapters/?scope=all").content.decode()
    for url in (f"/adapters/{adapter.pk}/", f"/adapters/{adapter.pk}/progress/"):
        assert client.get(url).status_code == 404
    for url in (f"/adapters/{adapter.pk}/rollback/", f"/adapters/versions/{rejected.pk}/serve/"):
        assert client.post(url).status_code == 404
    adapter.refresh_from_db()
    assert adapter.body["current_version"] == 1
    # Bob's Train now trains Bob's adapter, never Alice's.
    client.post("/adapters/train/")
    assert TrainingJob.objects.get().owner == bob and not TrainingJob.objects.filter(adapter=adapter).exists()


def test_pages_need_a_login(client, make_user):
    adapter, _ = trained(make_user())
    assert client.get("/adapters/").status_code == 302
    assert client.post(f"/adapters/{adapter.pk}/rollback/").status_code == 302
