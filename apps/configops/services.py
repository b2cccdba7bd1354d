"""Writes of config patches: propose (with a dry run), decide, apply (a new artifact version
through the artifact services, which validate it), roll back (revert to an earlier version).

Only admins act here; `actor=None` is the system itself (the architect's task), which may
propose but never decides or applies."""

import logging

from django.db import transaction
from django.utils import timezone

from apps.artifacts import selectors as artifact_selectors
from apps.artifacts import services as artifact_services
from apps.artifacts.models import Artifact, ArtifactVersion
from apps.artifacts.validation import validate_body
from apps.configops import dryrun
from apps.configops.models import ArchitectRequest, ConfigPatch
from apps.configops.patches import JUSTIFICATION_MAX, PatchDoesNotApply, apply_ops, normalise_ops
from apps.configops.selectors import ensure_admin
from liminal.errors import Conflict, DomainError, Forbidden, Invalid

logger = logging.getLogger(__name__)

CREATED_BY = {
    ConfigPatch.Proposer.SYSTEM_LLM: ArtifactVersion.CreatedBy.LLM,
    ConfigPatch.Proposer.HUMAN_ADMIN: ArtifactVersion.CreatedBy.USER,
    ConfigPatch.Proposer.USER: ArtifactVersion.CreatedBy.USER,
}
DECISIONS = {"approve": ConfigPatch.Status.APPROVED, "reject": ConfigPatch.Status.REJECTED}


def _ensure_acting_admin(actor) -> None:
    if actor is None:
        raise Forbidden("Only an admin can decide, apply or roll back a patch.")
    ensure_admin(actor)


def clean_justification(justification) -> str:
    if not isinstance(justification, str) or not justification.strip():
        raise Invalid("Say why the change is wanted (1 to 2000 characters).", field="justification")
    justification = justification.strip().replace("\x00", "")
    if len(justification) > JUSTIFICATION_MAX:
        raise Invalid(f"At most {JUSTIFICATION_MAX} characters.", field="justification")
    return justification


def failure_reason(error: DomainError) -> str:
    """The error's message with the JSON pointer of the fault: into the body where the result is
    invalid, else into the patch."""
    details = error.details if isinstance(error.details, dict) else {}
    pointer = details.get("body_pointer") or details.get("pointer")
    return f"{error.message} (JSON pointer {pointer})" if pointer else error.message


def evaluate(artifact: Artifact, body: dict, ops: list[dict]) -> tuple[dict | None, DomainError | None]:
    """(the body the patch makes, None) or (None, why it cannot be applied): a failing test
    operation (Conflict), an operation that does not apply, or an invalid result (Invalid,
    from the artifact validator: the kind's schema, then its references)."""
    try:
        new = apply_ops(body, ops)
    except PatchDoesNotApply as exc:
        return None, exc.error
    try:
        validate_body(new, owner=artifact.owner, kind=artifact.kind)
    except Invalid as exc:
        return None, exc
    return new, None


def dry_run_report(*, artifact: Artifact, base_version: int, body: dict, ops: list[dict], embed=None) -> dict:
    new, error = evaluate(artifact, body, ops)
    return dryrun.report(artifact=artifact, base_version=base_version, old=body, new=new, error=error, embed=embed)


def patch_propose(
    *,
    actor,
    ops,
    justification,
    artifact: Artifact | None = None,
    artifact_id=None,
    proposer: str | None = None,
    model_output: str = "",
    embed=None,
) -> ConfigPatch:
    """Record a proposal against the artifact's current version, with its dry run. A patch that
    cannot be applied (a failing test, a missing path, an invalid result) is recorded as failed
    with the reason and the JSON pointer of the fault; malformed operations are refused (400)."""
    ensure_admin(actor)
    if proposer is None:
        proposer = ConfigPatch.Proposer.SYSTEM_LLM if actor is None else ConfigPatch.Proposer.HUMAN_ADMIN
    if proposer not in ConfigPatch.Proposer.values:
        raise Invalid(f"Must be one of {', '.join(ConfigPatch.Proposer.values)}.", field="proposer")
    if artifact is None:
        artifact = artifact_selectors.artifact_get(actor=actor, artifact_id=artifact_id)
    if actor is not None and artifact.owner_id is not None and artifact.owner_id != actor.pk:
        raise Forbidden("Only the owner can change this artifact.")
    ops = normalise_ops(ops)
    justification = clean_justification(justification)
    artifact = Artifact.objects.select_related("current_version").get(pk=artifact.pk)
    base_version, body = artifact.version_number, artifact.body
    new, error = evaluate(artifact, body, ops)
    report = dryrun.report(artifact=artifact, base_version=base_version, old=body, new=new, error=error, embed=embed)
    return ConfigPatch.objects.create(
        artifact=artifact,
        base_version=base_version,
        proposer=proposer,
        proposed_by=actor,
        ops=ops,
        justification=justification,
        status=ConfigPatch.Status.FAILED if error else ConfigPatch.Status.PENDING,
        failure_reason=failure_reason(error) if error else "",
        dry_run=report,
        model_output=model_output,
    )


def patch_record_failure(*, artifact: Artifact, reason: str, model_output: str = "", justification="") -> ConfigPatch:
    """A proposal of the architect's that is not even a patch (its output did not parse or
    validate): kept as failed with the reason and the output, never applied."""
    return ConfigPatch.objects.create(
        artifact=artifact,
        base_version=artifact.version_number,
        proposer=ConfigPatch.Proposer.SYSTEM_LLM,
        ops=[],
        justification=(justification or "The architect's proposal.")[:JUSTIFICATION_MAX],
        status=ConfigPatch.Status.FAILED,
        failure_reason=reason[:4000],
        model_output=model_output,
    )


@transaction.atomic
def patch_decide(*, actor, patch: ConfigPatch, decision: str, reason: str = "") -> ConfigPatch:
    _ensure_acting_admin(actor)
    if decision not in DECISIONS:
        raise Invalid("Must be approve or reject.", field="decision")
    if not isinstance(reason, str) or len(reason) > JUSTIFICATION_MAX:
        raise Invalid(f"At most {JUSTIFICATION_MAX} characters.", field="reason")
    patch = ConfigPatch.objects.select_for_update().get(pk=patch.pk)
    if patch.status != ConfigPatch.Status.PENDING:
        raise Conflict(f"This patch is {patch.status}: only a pending patch can be approved or rejected.")
    patch.status = DECISIONS[decision]
    patch.decided_by = actor
    patch.decided_at = timezone.now()
    patch.decision_reason = reason.strip().replace("\x00", "")
    patch.save(update_fields=["status", "decided_by", "decided_at", "decision_reason"])
    return patch


def _fail(patch: ConfigPatch, reason: str, **fields) -> None:
    """Record the failure on its own (autocommitted) write: the error the caller raises next
    must not take it back."""
    ConfigPatch.objects.filter(pk=patch.pk, status=ConfigPatch.Status.APPROVED).update(
        status=ConfigPatch.Status.FAILED, failure_reason=reason, **fields
    )


def patch_apply(*, actor, patch: ConfigPatch, embed=None) -> ConfigPatch:
    """Apply an approved patch as a new version of its artifact (created_by from the proposer,
    the justification as the change note). The dry run is made again first and kept beside the
    proposal's. A patch written against a version that is no longer current is a Conflict (409);
    one whose result is invalid ends failed, naming the fault by JSON pointer (400)."""
    _ensure_acting_admin(actor)
    patch = ConfigPatch.objects.select_related("artifact").get(pk=patch.pk)
    if patch.status != ConfigPatch.Status.APPROVED:
        hint = " Approve it first." if patch.status == ConfigPatch.Status.PENDING else ""
        raise Conflict(f"This patch is {patch.status}: only an approved patch can be applied.{hint}")
    artifact = Artifact.objects.select_related("current_version").get(pk=patch.artifact_id)
    if artifact.version_number != patch.base_version:
        reason = (
            f"The patch was written against version {patch.base_version}, but the artifact is at version "
            f"{artifact.version_number} now; propose it again against the current version."
        )
        _fail(patch, reason)
        raise Conflict(reason, details={"base_version": patch.base_version, "current_version": artifact.version_number})
    new, error = evaluate(artifact, artifact.body, patch.ops)
    report = dryrun.report(
        artifact=artifact, base_version=patch.base_version, old=artifact.body, new=new, error=error, embed=embed
    )
    dry_run = {**patch.dry_run, "at_apply": report}
    if error is not None:
        _fail(patch, failure_reason(error), dry_run=dry_run)
        raise error
    with transaction.atomic():
        patch = ConfigPatch.objects.select_for_update().get(pk=patch.pk)
        if patch.status != ConfigPatch.Status.APPROVED:
            raise Conflict(f"This patch is {patch.status} now.")
        artifact = (
            Artifact.objects.select_for_update(of=("self",)).select_related("current_version").get(pk=artifact.pk)
        )
        if artifact.version_number != patch.base_version:
            raise Conflict("The artifact changed while the patch was being applied; try again.")
        artifact = artifact_services.artifact_patch(
            actor=actor,
            artifact=artifact,
            patch=patch.ops,
            change_note=patch.justification,
            created_by=CREATED_BY[patch.proposer],
        )
        patch.status = ConfigPatch.Status.APPLIED
        patch.applied_by = actor
        patch.applied_at = timezone.now()
        patch.applied_version = artifact.current_version
        patch.dry_run = dry_run
        patch.save(update_fields=["status", "applied_by", "applied_at", "applied_version", "dry_run"])
    return patch


def patch_rollback(*, actor, patch: ConfigPatch, version: int | None = None) -> ConfigPatch:
    """Undo an applied patch in one action: its artifact gets the body of `version` (by default
    the version the patch was written against) again, as a new version; history is kept."""
    _ensure_acting_admin(actor)
    with transaction.atomic():
        patch = ConfigPatch.objects.select_for_update().select_related("artifact").get(pk=patch.pk)
        if patch.status != ConfigPatch.Status.APPLIED:
            raise Conflict(f"This patch is {patch.status}: only an applied patch can be rolled back.")
        target = version or patch.base_version
        artifact = artifact_services.artifact_revert(
            actor=actor,
            artifact=patch.artifact,
            version=target,
            change_note=f"Rolled back config patch {str(patch.pk)[:8]}: restored version {target}.",
        )
        patch.rolled_back_by = actor
        patch.rolled_back_at = timezone.now()
        patch.rollback_version = artifact.current_version
        patch.save(update_fields=["rolled_back_by", "rolled_back_at", "rollback_version"])
    return patch


def artifact_restore(*, actor, artifact: Artifact, version: int) -> Artifact:
    """Make any earlier version of an artifact current again (a new version), from ConfigOps."""
    _ensure_acting_admin(actor)
    return artifact_services.artifact_revert(
        actor=actor, artifact=artifact, version=version, change_note=f"Restored version {version} (ConfigOps)."
    )


def architect_request(*, actor, artifact_id, goal: str = "") -> dict:
    """Queue the architect for one artifact the admin can change; it proposes a patch (pending,
    never applied) or records why it could not. The goal is kept on an ArchitectRequest row and
    only the row's id (also the task's id) is queued, once it is committed."""
    ensure_admin(actor)
    artifact = artifact_selectors.artifact_get(actor=actor, artifact_id=artifact_id)
    if actor is not None and artifact.owner_id is not None and artifact.owner_id != actor.pk:
        raise Forbidden("Only the owner can change this artifact.")
    if artifact.kind == Artifact.Kind.POLICY_ARCHITECT:
        # The model rewriting the prompt that asks it for changes would answer to nobody's design.
        raise Invalid(
            "The architect does not propose changes to its own policy; an admin edits it.", field="artifact_id"
        )
    goal = (goal or "").strip().replace("\x00", "")
    if len(goal) > JUSTIFICATION_MAX:
        raise Invalid(f"At most {JUSTIFICATION_MAX} characters.", field="goal")
    request = ArchitectRequest.objects.create(artifact=artifact, requested_by=actor, goal=goal)
    from apps.configops import tasks

    request_id = str(request.pk)
    transaction.on_commit(lambda: tasks.architect_propose.apply_async((request_id,), task_id=request_id))
    return {"queued": True, "task_id": request_id, "artifact_id": str(artifact.pk)}


def architect_request_finish(*, request: ArchitectRequest, patch: ConfigPatch) -> None:
    """Link the request to the proposal the architect answered it with."""
    ArchitectRequest.objects.filter(pk=request.pk).update(patch=patch)
