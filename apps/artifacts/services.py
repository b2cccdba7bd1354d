"""Writes of artifacts. Every write validates the body, makes a new immutable version, and
mirrors it to SHARED_FS_ROOT/artifacts/{id}/v{NNNN}.json once the transaction commits."""

import copy
import json
import logging
import os
import tempfile
from pathlib import Path

import jsonpatch
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.artifacts import selectors
from apps.artifacts.models import Artifact, ArtifactVersion
from apps.artifacts.validation import KIND_FAMILY, validate_body
from liminal.errors import Conflict, Forbidden, Invalid

logger = logging.getLogger(__name__)

NAME_MAX = 200


def version_path(artifact_id, version: int) -> Path:
    return Path(settings.SHARED_FS_ROOT) / "artifacts" / str(artifact_id) / f"v{version:04d}.json"


def _mirror(version: ArtifactVersion) -> None:
    """Write the version's file atomically; the database stays the source of truth."""
    path = version_path(version.artifact_id, version.version)
    record = {
        "artifact_id": str(version.artifact_id),
        "version": version.version,
        "created_by": version.created_by,
        "change_note": version.change_note,
        "parent_version": version.parent.version if version.parent_id else None,
        "created_at": version.created_at.isoformat(),
        "body": version.body,
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as tmp:
            json.dump(record, tmp, indent=2, sort_keys=True)
        os.replace(tmp.name, path)
    except OSError:
        logger.exception("Could not mirror %s to %s", version, path)


def _clean_name(name) -> str:
    if not isinstance(name, str) or not name.strip():
        raise Invalid("An artifact needs a name.", field="name")
    name = " ".join(name.split())
    if len(name) > NAME_MAX:
        raise Invalid(f"At most {NAME_MAX} characters.", field="name")
    return name


def _clean_description(description) -> str:
    if description is None:
        return ""
    if not isinstance(description, str) or len(description) > 4000:
        raise Invalid("Must be text of at most 4000 characters.", field="description")
    return description.replace("\x00", "")


def _ensure_writable(actor, artifact: Artifact) -> None:
    """Another user's private artifact is hidden (404); a visible one they may not change is 403."""
    selectors.artifact_get(actor=actor, artifact_id=artifact.pk)
    if artifact.is_global:
        if not (actor is None or actor.is_admin):
            raise Forbidden("Global artifacts can be changed by admins only.")
    elif artifact.owner_id != actor.id:
        raise Forbidden("Only the owner can change this artifact.")


def _new_version(
    *, artifact: Artifact, body: dict, author, created_by: str | None, change_note: str
) -> ArtifactVersion:
    """`created_by` None: the user when there is an author, else the system itself."""
    if created_by is None:
        created_by = ArtifactVersion.CreatedBy.USER if author is not None else ArtifactVersion.CreatedBy.SYSTEM
    parent = artifact.current_version
    version = ArtifactVersion.objects.create(
        artifact=artifact,
        version=(artifact.versions.order_by("-version").values_list("version", flat=True).first() or 0) + 1,
        body=body,
        created_by=created_by,
        author=author,
        change_note=(change_note or "")[:2000],
        parent=parent,
    )
    artifact.current_version = version
    artifact.updated_at = timezone.now()
    artifact.save(update_fields=["current_version", "updated_at", "description"])
    transaction.on_commit(lambda: _mirror(version))
    _after_write(artifact.kind)
    return version


def _after_write(kind: str) -> None:
    """Every process's cached lookups of this kind are stale: now (so this transaction's own
    later reads see the write) and again once committed (a process that looked up between the
    two cached what was committed before)."""

    def bump():
        try:
            selectors.generation_bump(kind)
        except Exception:  # lookups then refresh within selectors.LOOKUP_TTL_S
            logger.exception("Marking cached %s lookups stale failed", kind)

    bump()
    transaction.on_commit(bump)


@transaction.atomic
def artifact_create(
    *,
    actor,
    name,
    body,
    description="",
    visibility: str = Artifact.Visibility.PRIVATE,
    type: str | None = None,
    created_by: str | None = None,
    change_note: str = "",
) -> Artifact:
    """A new artifact and its version 1. `visibility="global"` makes it ownerless (admins only);
    `actor=None` is the system itself (data migrations)."""
    name, description = _clean_name(name), _clean_description(description)
    if visibility not in Artifact.Visibility.values:
        raise Invalid(f"Must be one of {', '.join(Artifact.Visibility.values)}.", field="visibility")
    is_global = visibility == Artifact.Visibility.GLOBAL
    if is_global and actor is not None and not actor.is_admin:
        raise Forbidden("Only admins can create global artifacts.")
    owner = None if is_global else actor
    if owner is None and not is_global:
        raise Invalid("The system creates global artifacts only.", field="visibility")
    kind = validate_body(body, owner=owner)
    if type is not None and type not in (KIND_FAMILY[kind], kind):
        raise Invalid(f"type {type!r} does not match the body's kind {kind!r}.", field="type")
    try:
        with transaction.atomic():
            artifact = Artifact.objects.create(
                owner=owner,
                type=KIND_FAMILY[kind],
                kind=kind,
                name=name,
                description=description,
                visibility=visibility,
            )
    except IntegrityError as exc:
        raise Conflict(f"There is already a {kind} called “{name}” here.") from exc
    _new_version(
        artifact=artifact,
        body=body,
        author=actor,
        created_by=created_by,
        change_note=change_note or "Created.",
    )
    return artifact


def _locked(artifact: Artifact) -> Artifact:
    return Artifact.objects.select_for_update(of=("self",)).select_related("current_version").get(pk=artifact.pk)


@transaction.atomic
def artifact_update(
    *,
    actor,
    artifact: Artifact,
    body=None,
    description=None,
    change_note: str = "",
    created_by: str | None = None,
) -> Artifact:
    """Replace the body (a new version) and/or the description. A changed description alone
    also makes a version, so the history says who changed what; a write that changes nothing
    makes none."""
    _ensure_writable(actor, artifact)
    artifact = _locked(artifact)
    if body is None:
        body = copy.deepcopy(artifact.body)
    validate_body(body, owner=artifact.owner, kind=artifact.kind)
    description = artifact.description if description is None else _clean_description(description)
    if body == artifact.body and description == artifact.description:
        return artifact
    artifact.description = description
    _new_version(artifact=artifact, body=body, author=actor, created_by=created_by, change_note=change_note)
    return artifact


def _patch_ops(patch) -> jsonpatch.JsonPatch:
    if not isinstance(patch, list) or not patch:
        raise Invalid("Must be a non-empty list of RFC 6902 operations.", field="patch")
    for index, op in enumerate(patch):
        if not isinstance(op, dict) or op.get("op") not in {"add", "remove", "replace", "move", "copy", "test"}:
            raise Invalid(
                "Each operation needs an op: add, remove, replace, move, copy or test.",
                field="patch",
                details={"pointer": f"/patch/{index}/op"},
            )
        if not isinstance(op.get("path"), str):
            raise Invalid("Each operation needs a path.", field="patch", details={"pointer": f"/patch/{index}/path"})
    try:
        return jsonpatch.JsonPatch(patch)
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError) as exc:
        raise Invalid(f"Not a valid JSON Patch: {exc}", field="patch") from exc


@transaction.atomic
def artifact_patch(
    *, actor, artifact: Artifact, patch, change_note: str = "", created_by: str | None = None
) -> Artifact:
    """Apply RFC 6902 operations to the current body as one new version: all or nothing."""
    _ensure_writable(actor, artifact)
    artifact = _locked(artifact)
    ops = _patch_ops(patch)
    try:
        body = ops.apply(copy.deepcopy(artifact.body))
    except jsonpatch.JsonPatchTestFailed as exc:
        raise Conflict(f"A test operation failed, so nothing was changed: {exc}") from exc
    except (jsonpatch.JsonPatchConflict, jsonpatch.JsonPointerException, jsonpatch.JsonPatchException) as exc:
        raise Invalid(f"The patch does not apply: {exc}", field="patch") from exc
    validate_body(body, owner=artifact.owner, kind=artifact.kind)
    if body == artifact.body:
        return artifact  # only test ops, or ops that restore what was there: nothing to record
    _new_version(
        artifact=artifact, body=body, author=actor, created_by=created_by, change_note=change_note or "Patched."
    )
    return artifact


@transaction.atomic
def artifact_revert(*, actor, artifact: Artifact, version: int, change_note: str = "") -> Artifact:
    """Make an earlier version's body current again, as a new version (history is never rewritten)."""
    _ensure_writable(actor, artifact)
    artifact = _locked(artifact)
    target = selectors.artifact_version_get(actor=actor, artifact=artifact, version=version)
    validate_body(target.body, owner=artifact.owner, kind=artifact.kind)
    if target.body == artifact.body:
        return artifact
    _new_version(
        artifact=artifact,
        body=copy.deepcopy(target.body),
        author=actor,
        created_by=None,
        change_note=change_note or f"Reverted to version {version}.",
    )
    return artifact


@transaction.atomic
def artifact_delete(*, actor, artifact: Artifact) -> None:
    _ensure_writable(actor, artifact)
    Artifact.objects.filter(pk=artifact.pk).delete()
    _after_write(artifact.kind)
