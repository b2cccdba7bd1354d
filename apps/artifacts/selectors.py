"""Reads of artifacts, scoped to the acting user: another user's private artifact is
indistinguishable from none."""

import threading
import time
import uuid
from collections import OrderedDict

from django.core.cache import cache
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


# Every chat turn looks up its workflow's tools, which change rarely. Each process keeps what it
# looked up under the kind's generation token, which every artifact write of that kind replaces
# (in the shared cache, so every process sees it); a missing token (a flushed cache) is a new
# one. The TTL bounds the damage of a write whose token change was lost.
_LOOKUPS: OrderedDict = OrderedDict()
_LOOKUPS_LOCK = threading.Lock()
_LOOKUPS_MAX = 1024
LOOKUP_TTL_S = 60.0


def _generation_key(kind: str) -> str:
    return f"artifacts:generation:{kind}"


def generation(kind: str) -> str | None:
    """The kind's current generation token (None when the cache cannot be read)."""
    try:
        token = cache.get(_generation_key(kind))
        if token is None:
            cache.add(_generation_key(kind), uuid.uuid4().hex, timeout=None)
            token = cache.get(_generation_key(kind))
        return token
    except Exception:  # the cache is down: look up in the database, as without a cache
        return None


def generation_bump(kind: str) -> None:
    """Called once an artifact write commits: every process's lookups of this kind are stale."""
    cache.set(_generation_key(kind), uuid.uuid4().hex, timeout=None)


def artifacts_by_names_cached(*, actor, kind: str, names) -> dict[str, Artifact]:
    """`artifacts_by_names`, remembered by this process until an artifact of the kind changes."""
    token = generation(kind)
    if token is None:
        return artifacts_by_names(actor=actor, kind=kind, names=names)
    key = (getattr(actor, "pk", None), kind, frozenset(names))
    now = time.monotonic()
    with _LOOKUPS_LOCK:
        hit = _LOOKUPS.get(key)
    if hit is not None and hit[0] == token and now - hit[1] < LOOKUP_TTL_S:
        return hit[2]
    found = artifacts_by_names(actor=actor, kind=kind, names=names)
    with _LOOKUPS_LOCK:
        _LOOKUPS[key] = (token, now, found)
        _LOOKUPS.move_to_end(key)
        while len(_LOOKUPS) > _LOOKUPS_MAX:
            _LOOKUPS.popitem(last=False)
    return found


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
