"""ConfigOps pages for admins: patches with their diff and dry run, the decisions, apply and
rollback, and each artifact's audit history. Lookups come first, so another user's artifact or
patch is a 404 like anywhere else; then anyone but an admin is refused (403)."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from apps.artifacts import selectors as artifact_selectors
from apps.artifacts.diff import body_diff, pretty
from apps.artifacts.models import Artifact
from apps.configops import selectors, services
from apps.configops.architect import ARCHITECT_KINDS
from apps.configops.models import ConfigPatch
from liminal.errors import Forbidden
from liminal.pages import attempt

STATUS_TABS = ["pending", "approved", "applied", "failed", "rejected", "all"]


def _admin_only(actor) -> None:
    try:
        selectors.ensure_admin(actor)
    except Forbidden as exc:
        raise PermissionDenied(exc.message) from exc


def _patch(request, patch_id) -> ConfigPatch:
    try:
        return selectors.patch_get(actor=request.user, patch_id=patch_id)
    except Forbidden as exc:
        raise PermissionDenied(exc.message) from exc


def _artifact(request, artifact_id) -> Artifact:
    artifact = artifact_selectors.artifact_get(actor=request.user, artifact_id=artifact_id)
    _admin_only(request.user)
    return artifact


@login_required
@require_GET
def index(request):
    _admin_only(request.user)
    tab = request.GET.get("status", "pending")
    if tab not in STATUS_TABS:
        tab = "pending"
    patches = selectors.patch_list(actor=request.user, status=None if tab == "all" else tab)[:200]
    # The architect's own policy is listed for its history and restore, never for the architect to patch.
    listed = [*ARCHITECT_KINDS, Artifact.Kind.POLICY_ARCHITECT]
    artifacts = artifact_selectors.artifact_list(actor=request.user).filter(kind__in=listed)
    return render(
        request,
        "configops/index.html",
        {"patches": patches, "tab": tab, "tabs": STATUS_TABS, "artifacts": artifacts},
    )


def _after_body(patch: ConfigPatch, before):
    """The body the patch makes (or made), and why it cannot be made if it cannot."""
    if patch.applied_version_id:
        return patch.applied_version.body, None
    if before is None:
        return None, None
    return services.evaluate(patch.artifact, before, patch.ops)


@login_required
@require_GET
def patch_detail(request, patch_id):
    patch = _patch(request, patch_id)
    artifact = patch.artifact
    base = artifact.versions.filter(version=patch.base_version).first()
    before = base.body if base else None
    after, error = _after_body(patch, before)
    fresh = None
    if patch.status == ConfigPatch.Status.APPROVED and artifact.version_number == patch.base_version:
        # Shown again before apply: the messages since the proposal count too.
        fresh = services.dry_run_report(
            artifact=artifact, base_version=patch.base_version, body=artifact.body, ops=patch.ops
        )
    return render(
        request,
        "configops/patch.html",
        {
            "patch": patch,
            "artifact": artifact,
            "diff": body_diff(before, after, before_label=f"v{patch.base_version}", after_label="patched")
            if before is not None and after is not None
            else [],
            "error": error,
            "ops": pretty(patch.ops),
            "report": patch.dry_run or None,
            "apply_report": patch.dry_run.get("at_apply"),
            "fresh": fresh,
            "stale": patch.status in (ConfigPatch.Status.PENDING, ConfigPatch.Status.APPROVED)
            and artifact.version_number != patch.base_version,
            "versions": artifact.versions.order_by("-version").values_list("version", flat=True),
        },
    )


def _act(request, patch_id, action, done: str):
    patch = _patch(request, patch_id)
    attempt(request, lambda: action(patch), success=done)
    return redirect("configops:patch", patch_id=patch.pk)


@login_required
@require_POST
def patch_decide(request, patch_id):
    decision = request.POST.get("decision", "")
    return _act(
        request,
        patch_id,
        lambda patch: services.patch_decide(
            actor=request.user, patch=patch, decision=decision, reason=request.POST.get("reason", "")
        ),
        "Approved." if decision == "approve" else "Rejected.",
    )


@login_required
@require_POST
def patch_apply(request, patch_id):
    return _act(
        request,
        patch_id,
        lambda patch: services.patch_apply(actor=request.user, patch=patch),
        "Applied: the artifact has a new version.",
    )


@login_required
@require_POST
def patch_rollback(request, patch_id):
    try:
        version = int(request.POST["version"]) if request.POST.get("version") else None
    except ValueError:
        version = None
    return _act(
        request,
        patch_id,
        lambda patch: services.patch_rollback(actor=request.user, patch=patch, version=version),
        "Rolled back: the earlier version is current again, as a new version.",
    )


@login_required
@require_GET
def artifact_history(request, artifact_id):
    artifact = _artifact(request, artifact_id)
    versions = list(
        artifact_selectors.artifact_versions(actor=request.user, artifact=artifact).select_related("author")
    )
    patches = selectors.patch_list(actor=request.user, artifact=artifact)
    by_version = {}
    for patch in patches:
        if patch.applied_version_id:
            by_version[patch.applied_version_id] = patch
    rows = [{"version": version, "patch": by_version.get(version.pk)} for version in versions]
    return render(
        request,
        "configops/artifact.html",
        {"artifact": artifact, "rows": rows, "patches": patches, "can_ask": artifact.kind in ARCHITECT_KINDS},
    )


@login_required
@require_POST
def artifact_restore(request, artifact_id):
    artifact = _artifact(request, artifact_id)
    try:
        version = int(request.POST.get("version", ""))
    except ValueError:
        messages.error(request, "Pick a version to restore.")
    else:
        attempt(
            request,
            lambda: services.artifact_restore(actor=request.user, artifact=artifact, version=version),
            success=f"Version {version} is current again (as a new version).",
        )
    return redirect("configops:artifact", artifact_id=artifact.pk)


@login_required
@require_POST
def artifact_architect(request, artifact_id):
    artifact = _artifact(request, artifact_id)
    attempt(
        request,
        lambda: services.architect_request(
            actor=request.user, artifact_id=artifact.pk, goal=request.POST.get("goal", "")
        ),
        success="The architect is on it: its proposal will be listed here when it is ready.",
    )
    return redirect(reverse("configops:artifact", args=[artifact.pk]))
