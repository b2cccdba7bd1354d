"""Reads of config patches. ConfigOps is for admins: a patch is found only on an artifact the
actor can see (anyone else's private artifact is indistinguishable from none, 404), and a user
who is not an admin is then refused (403) and sees nothing of it."""

from django.core.exceptions import ValidationError

from apps.artifacts.models import Artifact
from apps.artifacts.selectors import visible_q
from apps.configops.models import ConfigPatch
from liminal.errors import Forbidden, Invalid, NotFound


def ensure_admin(actor) -> None:
    """`actor` None is the system itself (the architect's task)."""
    if actor is not None and not getattr(actor, "is_admin", False):
        raise Forbidden("Only admins can see or change configuration patches.")


def _visible(actor):
    patches = ConfigPatch.objects.select_related(
        "artifact", "artifact__current_version", "proposed_by", "decided_by", "applied_version", "rollback_version"
    )
    if actor is None:
        return patches
    return patches.filter(artifact__in=Artifact.objects.filter(visible_q(actor)))


def patch_list(*, actor, status: str | None = None, artifact=None):
    ensure_admin(actor)
    patches = _visible(actor)
    if status:
        if status not in ConfigPatch.Status.values:
            raise Invalid(f"Must be one of {', '.join(ConfigPatch.Status.values)}.", field="status")
        patches = patches.filter(status=status)
    if artifact is not None:
        patches = patches.filter(artifact=artifact)
    return patches.order_by("-created_at", "-id")


def patch_get(*, actor, patch_id) -> ConfigPatch:
    try:
        patch = _visible(actor).filter(pk=patch_id).first()
    except (ValueError, TypeError, ValidationError):
        patch = None
    if patch is None:
        raise NotFound("Patch not found.")
    ensure_admin(actor)
    return patch
