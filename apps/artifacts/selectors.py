"""Reads of artifacts, scoped to the acting user: another user's private artifact is
indistinguishable from none."""

from django.core.exceptions import ValidationError
from django.db.models import Q

from apps.artifacts.models import Artifact, ArtifactVersion
from liminal.errors import NotFound


def visible_q(actor) -> Q:
    """Own artifacts, shared ones of the actor's tenant, and global ones."""
    visible = Q(visibility=Artifact.Visibility.GLOBAL)
    if actor is not None and getattr(actor, "is_authenticated", False):
        visible |= Q(owner=actor) | Q(visibility=Artifact.Visibility.SHARED, owner__tenant_id=actor.tenant_id)
    return visible


def artifact_list(*, actor, type: str | None = None, kind: str | None = None, visibility: str | None = None, query=""):
    artifacts = Artifact.objects.filter(visible_q(actor)).select_related("current_version")
    if type:
        # Either the family ("workflow") or a full kind ("workflow.chat"), as older clients send both.
        artifacts = artifacts.filter(Q(type=type) | Q(kind=type))
    if kind:
        artifacts = artifacts.filter(kind=kind)
    if visibility:
        artifacts = artifacts.filter(visibility=visibility)
    if query:
        artifacts = artifacts.filter(Q(name__icontains=query) | Q(description__icontains=query))
    return artifacts.order_by("kind", "name", "id")


def artifact_get(*, actor, artifact_id, kind: str | None = None) -> Artifact:
    artifacts = Artifact.objects.filter(visible_q(actor)).select_related("current_version", "owner")
    if kind:
        artifacts = artifacts.filter(kind=kind)
    try:
        artifact = artifacts.filter(pk=artifact_id).first()
    except (ValueError, TypeError, ValidationError):  # not an id at all
        artifact = None
    if artifact is None:
        raise NotFound("Artifact not found.")
    return artifact


def artifact_by_name(*, actor, kind: str, name: str) -> Artifact | None:
    """The artifact of this kind and name the actor sees, their own before a shared or global one."""
    return artifacts_by_names(actor=actor, kind=kind, names=[name]).get(name)


def artifacts_by_names(*, actor, kind: str, names) -> dict[str, Artifact]:
    """`artifact_by_name` for several names in one query: name -> the artifact the actor sees."""
    rank = {"own": 0, "global": 1, "other": 2}
    found: dict[str, tuple[int, Artifact]] = {}
    rows = Artifact.objects.filter(visible_q(actor), kind=kind, name__in=set(names)).select_related("current_version")
    for artifact in rows.order_by("created_at"):
        if actor is not None and artifact.owner_id == actor.pk:
            order = rank["own"]
        else:
            order = rank["global"] if artifact.owner_id is None else rank["other"]
        if artifact.name not in found or order < found[artifact.name][0]:
            found[artifact.name] = (order, artifact)
    return {name: artifact for name, (_, artifact) in found.items()}


def global_artifact(*, kind: str, name: str) -> Artifact | None:
    return Artifact.objects.filter(owner__isnull=True, kind=kind, name=name).select_related("current_version").first()


def artifact_versions(*, actor, artifact: Artifact):
    artifact_get(actor=actor, artifact_id=artifact.pk)
    return ArtifactVersion.objects.filter(artifact=artifact).order_by("-version")


def artifact_version_get(*, actor, artifact: Artifact, version: int) -> ArtifactVersion:
    found = artifact_versions(actor=actor, artifact=artifact).filter(version=version).first()
    if found is None:
        raise NotFound(f"Version {version} of this artifact does not exist.")
    return found
