"""The Adapters page: what Liminal has learnt for a user, as versions of their persona adapter,
each with its gate report and loss curve; the job training the next one, with its progress; and
the three actions that change what answers use: Train now, Serve this version, Roll back.

Users see their own adapters; admins also see everyone's (`?scope=all`) and may overrule the
gate. Another user's adapter or version is a 404 like a missing one. Actions are plain forms
posted and redirected back, with the outcome as a message; the running job's progress polls."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Count
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from apps.conversations.charts import line_chart
from apps.training import adapters as adapter_services
from apps.training import selectors as training_selectors
from apps.training.models import AdapterVersion, TrainingJob
from liminal.pages import attempt

PROGRESS_POLL_SECONDS = 2
# The gate's checks (workers.train.gate), named for people; an unknown one shows its own name.
GATE_CHECK_LABELS = {
    "held_out": "Held-out examples",
    "improvement": "Better on held-out examples",
    "facts": "Corrected facts",
    "retention": "Unrelated answers kept",
}


def _job_progress(job: TrainingJob | None) -> dict | None:
    """Where a job is, in words and numbers: its phase, the share of steps done and an ETA."""
    if job is None:
        return None
    progress = {"job": job, "percent": 0, "eta_seconds": None, "active": job.status in TrainingJob.ACTIVE}
    phase = (job.report or {}).get("phase") if job.status == TrainingJob.Status.RUNNING else None
    if job.status == TrainingJob.Status.QUEUED:
        progress["phase"] = "Waiting for a training worker"
    elif phase in ("dataset", "current") or (job.status == TrainingJob.Status.RUNNING and not job.steps_total):
        progress["phase"] = "Building the dataset and asking the current version"
    elif phase == "gate" or (job.status == TrainingJob.Status.RUNNING and job.steps_done >= job.steps_total):
        progress["phase"] = "Checking the candidate against the gate"
    elif job.status == TrainingJob.Status.RUNNING:
        progress["phase"] = f"Training: step {job.steps_done} of {job.steps_total}"
        if job.steps_done and job.started_at and job.heartbeat_at:
            per_step = (job.heartbeat_at - job.started_at).total_seconds() / job.steps_done
            progress["eta_seconds"] = round(per_step * (job.steps_total - job.steps_done))
    else:
        progress["phase"] = job.get_status_display()
    if job.steps_total:
        progress["percent"] = min(100, round(100 * job.steps_done / job.steps_total))
    return progress


def _version_row(version: AdapterVersion, current: AdapterVersion | None, actor) -> dict:
    evaluation = version.evaluation or {}
    passed = bool(evaluation.get("passed"))
    serving = current is not None and current.pk == version.pk
    may_serve = not serving and version.tainted_at is None and (passed or actor.is_staff)
    return {
        "v": version,
        "serving": serving,
        "status_label": "served before"
        if version.status == AdapterVersion.Status.PROMOTED
        else version.get_status_display().lower(),
        "passed": passed,
        "checks": [
            {"label": GATE_CHECK_LABELS.get(name, name.replace("_", " ").capitalize()), **check}
            for name, check in (evaluation.get("checks") or {}).items()
        ],
        "summary": evaluation.get("summary", ""),
        "approved_by": evaluation.get("approved_by"),
        "train_seconds": evaluation.get("train_seconds"),
        "tokens_per_second": evaluation.get("tokens_per_second"),
        "chart": line_chart(version.loss_curve or []),
        "may_serve": may_serve,
        "serve_label": "Serve this version" if passed else "Approve over the gate",
    }


@login_required
@require_GET
def adapters_page(request):
    everyone = request.user.is_staff and request.GET.get("scope") == "all"
    adapters = training_selectors.adapters_list(actor=request.user, everyone=everyone).annotate(
        versions_count=Count("adapter_versions")
    )
    rows = [
        {
            "adapter": adapter,
            "current_version": (adapter.body or {}).get("current_version"),
            "progress": _job_progress(training_selectors.adapter_jobs(adapter=adapter, limit=1).first()),
        }
        for adapter in adapters
    ]
    return render(
        request,
        "adapters/index.html",
        {
            "rows": rows,
            "everyone": everyone,
            "has_persona": any(r["adapter"].owner_id == request.user.pk for r in rows),
        },
    )


@login_required
@require_GET
def adapter_page(request, adapter_id):
    adapter = training_selectors.adapter_get(actor=request.user, adapter_id=adapter_id)
    current = training_selectors.promoted_version(adapter=adapter)
    versions = [_version_row(v, current, request.user) for v in training_selectors.adapter_versions(adapter=adapter)]
    jobs = [
        {"job": job, "why": job.error or (job.report or {}).get("reason", "")}
        for job in training_selectors.adapter_jobs(adapter=adapter)
    ]
    context = {
        "adapter": adapter,
        "current": current,
        "versions": versions,
        "jobs": jobs,
        "progress": _job_progress(training_selectors.adapter_active_job(adapter=adapter)),
        "own": adapter.owner_id == request.user.pk,
        "poll_seconds": PROGRESS_POLL_SECONDS,
    }
    return render(request, "adapters/detail.html", context)


@login_required
@require_GET
def adapter_progress(request, adapter_id):
    """The running job's progress, polled. When the job polled for has finished, the page reloads
    to show the version it produced."""
    adapter = training_selectors.adapter_get(actor=request.user, adapter_id=adapter_id)
    active = training_selectors.adapter_active_job(adapter=adapter)
    if active is None or str(active.pk) != request.GET.get("job", str(active.pk)):
        response = HttpResponse(status=204)
        response["HX-Refresh"] = "true"
        return response
    context = {"adapter": adapter, "progress": _job_progress(active), "poll_seconds": PROGRESS_POLL_SECONDS}
    return render(request, "adapters/_progress.html", context)


@login_required
@require_POST
def adapter_train(request):
    """Train now: a job for the user's own persona adapter."""
    attempt(
        request,
        lambda: adapter_services.training_job_create(actor=request.user, trigger=TrainingJob.Trigger.MANUAL),
        success="Training queued. The new version is checked against the gate before it is used.",
    )
    adapter = training_selectors.persona_adapter(actor=request.user)
    return redirect("adapter", adapter.pk) if adapter is not None else redirect("adapters")


@login_required
@require_POST
def adapter_rollback(request, adapter_id):
    adapter = training_selectors.adapter_get(actor=request.user, adapter_id=adapter_id)
    done, served = attempt(request, lambda: adapter_services.adapter_rollback(actor=request.user, adapter=adapter))
    if done:
        now_using = f"version {served.version}" if served else "the base model"
        messages.success(request, f"Rolled back: answers now use {now_using}, from the next message on.")
    return redirect("adapter", adapter.pk)


@login_required
@require_POST
def version_serve(request, version_id):
    version = training_selectors.version_get(actor=request.user, version_id=version_id)
    attempt(
        request,
        lambda: adapter_services.version_approve(actor=request.user, version=version),
        success=f"Version {version.version} is now used for answers, from the next message on.",
    )
    return redirect("adapter", version.adapter_id)
