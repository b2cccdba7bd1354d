"""The Adapters page in headless Chromium against a live server: versions with their gate report
and loss curve, a running job's progress bar moving as the worker reports steps, the page
showing the new version when the job ends, and Roll back. Screenshots at desktop and phone size."""

import pytest
from django.utils import timezone

from apps.conversations.tests.browser import chromium_page, log_in, shoot
from apps.training import adapters
from apps.training.models import AdapterVersion, TrainingJob

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHECKS = {
    "improvement": {
        "passed": True,
        "detail": "mean gain +0.82 nats/token on 8 held-out examples, 95% lower bound +0.61",
    },
    "facts": {"passed": True, "detail": "4 of 4 held-out answers contain the corrected fact"},
    "retention": {
        "passed": True,
        "detail": "0.991 of the current log-probability on 50 unrelated prompts (at least 0.95)",
    },
}


@pytest.fixture
def page(live_server_url, monkeypatch):
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with chromium_page("adapters-last-state", accept_dialogs=True) as page:
        yield page


def _version(adapter, number, *, passed=True, curve=(2.6, 2.1, 1.5, 0.9, 0.55, 0.4, 0.31, 0.27), **fields):
    checks = (
        {**CHECKS}
        if passed
        else {
            **CHECKS,
            "retention": {
                **CHECKS["retention"],
                "passed": False,
                "detail": "0.81 of the current log-probability (at least 0.95)",
            },
        }
    )
    return AdapterVersion.objects.create(
        owner=adapter.owner,
        adapter=adapter,
        version=number,
        fs_dir=f"/adapters/v{number:04d}",
        loss_curve=list(curve),
        status=AdapterVersion.Status.CANDIDATE if passed else AdapterVersion.Status.REJECTED,
        evaluation={"passed": passed, "checks": checks, "train_seconds": 104.2, "tokens_per_second": 388.0},
        **fields,
    )


def test_adapters_page_progress_and_rollback(page, live_server_url, make_user):
    user = make_user(email="adapters@example.com")
    adapter = adapters.persona_adapter_ensure(actor=user)
    v1 = adapters.version_promote(version=_version(adapter, 1))
    _version(adapter, 2, passed=False, parent=v1, curve=(2.5, 2.6, 2.4, 2.7, 2.5))
    started = timezone.now()
    job = TrainingJob.objects.create(
        owner=user,
        adapter=adapter,
        status=TrainingJob.Status.RUNNING,
        trigger=TrainingJob.Trigger.THRESHOLD,
        started_at=started,
        heartbeat_at=started,
        examples=44,
        steps_total=30,
    )

    log_in(page, live_server_url, "adapters@example.com")
    page.click(".topnav a[href='/adapters/']")
    page.click("a.adapter-name")
    page.wait_for_selector("#job-progress")
    assert "step 0 of 30" in page.inner_text("#job-progress")
    assert page.locator(".loss-chart svg polyline").count() == 2
    assert "rejected by the gate" in page.inner_text("#version-2")

    # The worker reports steps; the bar follows without a reload.
    page.evaluate("window.notReloaded = true")
    job.steps_done, job.loss_curve = 12, [2.5 - 0.05 * i for i in range(12)]
    job.heartbeat_at = started + timezone.timedelta(seconds=36)
    job.save()
    page.wait_for_function("document.querySelector('[role=progressbar]').getAttribute('aria-valuenow') === '40'")
    assert page.evaluate("window.notReloaded") is True
    assert "step 12 of 30" in page.inner_text("#job-progress")
    shoot(page, "adapters-training", full_page=True)

    # The job ends with a new version, promoted: the page reloads to show it.
    v3 = _version(adapter, 3, parent=v1)
    adapters.version_promote(version=v3)
    job.status, job.steps_done, job.version, job.finished_at = TrainingJob.Status.PROMOTED, 30, v3, timezone.now()
    job.save()
    page.wait_for_function("window.notReloaded === undefined", timeout=15_000)
    page.wait_for_selector("#version-3.serving")
    assert page.locator("#job-progress").count() == 0
    assert "serving v3" in page.inner_text(".adapter-summary")
    shoot(page, "adapters-page", full_page=True)

    page.click("button >> text=Roll back")
    page.wait_for_selector(".notice-success")
    assert "answers now use version 1" in page.inner_text(".notices")
    assert page.locator("#version-1.serving").count() == 1
    adapter.refresh_from_db()
    assert adapter.body["current_version"] == 1
