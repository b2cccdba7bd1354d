"""Reads of feedback and memory, scoped to the acting user."""

from django.core.exceptions import ValidationError
from django.db.models import Count, Q
from django.utils import timezone
from pgvector.django import CosineDistance

from apps.training.models import MemoryItem, PreferenceEvent
from liminal.errors import NotFound

THUMBS = (PreferenceEvent.Kind.THUMBS_UP, PreferenceEvent.Kind.THUMBS_DOWN)


def _one(queryset, object_id, what: str):
    try:
        found = queryset.filter(pk=object_id).first()
    except (ValueError, TypeError, ValidationError):
        found = None
    if found is None:
        raise NotFound(f"{what} not found.")
    return found


def thumbs_for_messages(*, actor, message_ids) -> dict:
    """message id -> the actor's current thumb kind, for the given messages."""
    rows = PreferenceEvent.objects.filter(
        owner=actor, message_id__in=list(message_ids), kind__in=THUMBS, excluded_at=None
    )
    return {row.message_id: row.kind for row in rows}


def events_list(*, actor, kind: str | None = None):
    """The actor's signals that are not forgotten, newest first."""
    events = PreferenceEvent.objects.filter(owner=actor, excluded_at=None)
    if kind:
        events = events.filter(kind=kind)
    return events.order_by("-created_at")


def event_get(*, actor, event_id) -> PreferenceEvent:
    return _one(PreferenceEvent.objects.filter(owner=actor, excluded_at=None), event_id, "Feedback")


def _live_corrections(actor):
    return PreferenceEvent.objects.filter(
        owner=actor,
        kind=PreferenceEvent.Kind.CORRECTION,
        superseded_by=None,
        excluded_at=None,
        prompt_embedding__isnull=False,
    )


def corrections_exist(*, actor) -> bool:
    """Whether correction memory has anything to recall for the actor: when not, an answer need
    not embed its message for it (one indexed query against a ~15 ms encode)."""
    return _live_corrections(actor).exists()


def corrections_recall(*, actor, embedding, min_similarity: float, limit: int) -> list[tuple[PreferenceEvent, float]]:
    """The actor's live corrections of prompts within `min_similarity` (cosine) of this one."""
    rows = (
        _live_corrections(actor)
        .annotate(distance=CosineDistance("prompt_embedding", embedding))
        .filter(distance__lte=1 - min_similarity)
        .order_by("distance", "-created_at")[:limit]
    )
    return [(row, 1 - row.distance) for row in rows]


def memory_list(*, actor):
    return MemoryItem.objects.filter(owner=actor).order_by("-pinned", "-created_at")


def memory_get(*, actor, item_id) -> MemoryItem:
    return _one(MemoryItem.objects.filter(owner=actor), item_id, "Memory item")


def memory_exists(*, actor, window_days: int, now=None) -> bool:
    """Whether `memory_recall` could find anything: an item from the window, or a pinned one."""
    now = now or timezone.now()
    window = Q(created_at__gte=now - timezone.timedelta(days=window_days)) | Q(pinned=True)
    return MemoryItem.objects.filter(window, owner=actor, created_at__lte=now).exists()


def memory_recall(
    *, actor, embedding, window_days: int, limit: int, min_similarity: float, now=None
) -> list[tuple[MemoryItem, float]]:
    """The `limit` items from the last `window_days` nearest this text, plus every pinned one
    (at `min_similarity` or nearer, cosine), nearest first."""
    now = now or timezone.now()
    rows = (
        MemoryItem.objects.filter(owner=actor)
        .annotate(distance=CosineDistance("embedding", embedding))
        .filter(distance__lte=1 - min_similarity)
    )
    recent = list(rows.filter(created_at__gte=now - timezone.timedelta(days=window_days), created_at__lte=now))
    recent = sorted(recent, key=lambda row: row.distance)[:limit]
    pinned = [row for row in rows.filter(pinned=True, created_at__lte=now) if row not in recent]
    return [(row, 1 - row.distance) for row in sorted(recent + pinned, key=lambda row: row.distance)]


def insights(*, actor) -> dict:
    """The seed system's insights shape: totals, clusters, adapters, routing feedback, events."""
    events = events_list(actor=actor)
    by_kind = dict(events.values_list("kind").annotate(n=Count("id")).values_list("kind", "n"))
    positive = events.filter(Q(score__gt=0)).count()
    negative = events.filter(Q(score__lt=0)).count()
    clusters = events.exclude(cluster_id="").values("cluster_id").annotate(events=Count("id")).order_by("-events")[:50]
    routing = events.filter(kind=PreferenceEvent.Kind.ROUTING)
    return {
        "totals": {
            "events": events.count(),
            "positive": positive,
            "negative": negative,
            "corrections": by_kind.get(PreferenceEvent.Kind.CORRECTION, 0),
            "pairs": by_kind.get(PreferenceEvent.Kind.PICK, 0),
            "by_kind": by_kind,
            "memory_items": MemoryItem.objects.filter(owner=actor).count(),
        },
        "clusters": list(clusters),
        "adapters": [],
        "routing_feedback": {
            "total": routing.count(),
            "positive": routing.filter(score__gt=0).count(),
            "negative": routing.filter(score__lt=0).count(),
        },
        "events": [
            {
                "id": str(e.pk),
                "kind": e.kind,
                "feedback": e.feedback,
                "score": e.score,
                "message_id": str(e.message_id) if e.message_id else None,
                "created_at": e.created_at.isoformat(),
            }
            for e in events[:20]
        ],
    }


PERSONA_ADAPTER_NAME = "persona"


def persona_adapter(*, actor):
    """The actor's own persona `adapter.lora` artifact, if they have one (never anyone else's)."""
    from apps.artifacts.models import Artifact

    return (
        Artifact.objects.filter(owner=actor, kind="adapter.lora", name=PERSONA_ADAPTER_NAME)
        .select_related("current_version")
        .first()
    )


def promoted_versions(*, adapters) -> dict:
    """adapter id -> the version each artifact's body names as current, where that version is
    promoted; one query for all of them (routing reads every candidate's before a first token)."""
    from apps.training.models import AdapterVersion

    wanted = Q()
    for adapter in adapters:
        number = (adapter.body or {}).get("current_version")
        if number:
            wanted |= Q(adapter_id=adapter.pk, version=number)
    if not wanted:
        return {}
    return {v.adapter_id: v for v in AdapterVersion.objects.filter(wanted, status=AdapterVersion.Status.PROMOTED)}


def promoted_version(*, adapter):
    """The version the artifact's body names as current, if it is promoted."""
    return promoted_versions(adapters=[adapter]).get(adapter.pk) if adapter is not None else None


def training_parent(*, adapter):
    """The version the next job continues from: the served version, or, when that one was
    trained on signals since forgotten, the newest clean version in its lineage (None: the base
    model). A version trained on a forgotten signal, or built on one that was, is never built on:
    its weights carry what was forgotten."""
    lineage = []
    version = promoted_version(adapter=adapter)
    while version is not None:
        lineage.append(version)
        version = version.parent
    clean = None
    for version in reversed(lineage):  # from the first version on
        if version.tainted_at is not None:
            break
        clean = version
    return clean


def persona_serving(*, actor, version) -> dict:
    """How answers for this user name their promoted persona `version` to the engine. The engine
    name carries the user's id, so no other user's request can resolve to it."""
    return {
        "name": f"persona-{actor.pk}",
        "adapter_id": str(version.adapter_id),
        "version": version.version,
        "fs_dir": version.fs_dir,
        "weight": 1.0,
    }


def serving_adapters(*, actor) -> list[dict]:
    """What answers for this user use: their promoted persona adapter, if any."""
    version = promoted_version(adapter=persona_adapter(actor=actor))
    return [] if version is None else [persona_serving(actor=actor, version=version)]


def _adapter_artifacts():
    from apps.artifacts.models import Artifact

    return Artifact.objects.filter(kind="adapter.lora").select_related("owner")


def adapters_list(*, actor, everyone: bool = False):
    """The actor's `adapter.lora` artifacts; with `everyone`, an admin's view of all of them."""
    adapters = _adapter_artifacts()
    if not (everyone and actor.is_staff):
        adapters = adapters.filter(owner=actor)
    return adapters.order_by("owner__email", "name")


def adapter_get(*, actor, adapter_id):
    """One adapter the actor may see: their own, or any for an admin (others: 404)."""
    adapters = _adapter_artifacts()
    if not actor.is_staff:
        adapters = adapters.filter(owner=actor)
    return _one(adapters, adapter_id, "Adapter")


def adapter_versions(*, adapter):
    from apps.training.models import AdapterVersion

    return AdapterVersion.objects.filter(adapter=adapter).select_related("parent").order_by("-version")


def adapter_jobs(*, adapter, limit: int = 20):
    from apps.training.models import TrainingJob

    return TrainingJob.objects.filter(adapter=adapter).select_related("version").order_by("-created_at")[:limit]


def adapter_active_job(*, adapter):
    from apps.training.models import TrainingJob

    return TrainingJob.objects.filter(adapter=adapter, status__in=TrainingJob.ACTIVE).first()


def version_get(*, actor, version_id):
    """One adapter version the actor may see: of their own adapter, or any for an admin."""
    from apps.training.models import AdapterVersion

    versions = AdapterVersion.objects.select_related("adapter", "adapter__owner", "parent")
    if not actor.is_staff:
        versions = versions.filter(owner=actor)
    return _one(versions, version_id, "Adapter version")


def jobs_list(*, actor, limit: int = 100):
    from apps.training.models import TrainingJob

    return TrainingJob.objects.filter(owner=actor).select_related("version").order_by("-created_at")[:limit]


# Topics and skills. A user sees their own clusters and the global ones; in a global cluster
# they see only their own signals' text, never another user's (admins see everything).


def _clusters():
    from apps.training.models import SemanticCluster

    return SemanticCluster.objects.select_related("owner", "merged_into")


def clusters_list(*, actor, scope: str = "mine", include_inactive: bool = False):
    """`mine`: the actor's clusters; `global`: everyone's topics; `all`: every user's (admins)."""
    from apps.training.models import SemanticCluster

    clusters = _clusters()
    if scope == "global":
        clusters = clusters.filter(owner__isnull=True)
    elif scope == "all" and actor.is_staff:
        pass
    else:
        clusters = clusters.filter(owner=actor)
    if not include_inactive:
        clusters = clusters.filter(status__in=SemanticCluster.LIVE)
    return clusters.order_by("-size", "created_at")


def cluster_get(*, actor, cluster_id):
    """One cluster the actor may see: their own or a global one (any for an admin)."""
    clusters = _clusters()
    if not actor.is_staff:
        clusters = clusters.filter(Q(owner=actor) | Q(owner__isnull=True))
    return _one(clusters, cluster_id, "Cluster")


def cluster_samples(*, actor, cluster) -> list[dict]:
    """The cluster's sample signals the actor may read: in a global cluster only their own
    (an admin reads all)."""
    events = PreferenceEvent.objects.filter(pk__in=cluster.sample_event_ids, excluded_at=None)
    if not actor.is_staff:
        events = events.filter(owner=actor)
    found = {str(e.pk): e for e in events}
    return [
        {"event_id": event_id, "message_id": str(e.message_id) if e.message_id else None, "prompt": e.prompt}
        for event_id in cluster.sample_event_ids
        if (e := found.get(str(event_id))) is not None
    ]


def nearest_cluster(*, actor, embedding, min_similarity: float):
    """The actor's live cluster nearest the embedding, if within `min_similarity` (cosine)."""
    from apps.training.models import SemanticCluster

    found = (
        SemanticCluster.objects.filter(owner=actor, status__in=SemanticCluster.LIVE)
        .annotate(distance=CosineDistance("centroid", embedding))
        .order_by("distance")
        .first()
    )
    return found if found is not None and 1 - found.distance >= min_similarity else None


def cluster_labels(*, actor) -> dict[str, str]:
    """cluster id -> label, for the clusters the actor's routing may read."""
    from apps.training.models import SemanticCluster

    return {
        str(pk): label
        for pk, label in SemanticCluster.objects.filter(Q(owner=actor) | Q(owner__isnull=True))
        .exclude(label="")
        .values_list("pk", "label")
    }


def skill_proposals(*, actor, everyone: bool = False):
    from apps.training.models import SkillProposal

    proposals = SkillProposal.objects.select_related("cluster", "owner", "adapter", "job", "decided_by")
    if not (everyone and actor.is_staff):
        proposals = proposals.filter(owner=actor)
    return proposals.order_by("-created_at")


def skill_proposal_get(*, actor, proposal_id):
    from apps.training.models import SkillProposal

    proposals = SkillProposal.objects.select_related("cluster", "owner", "adapter", "job")
    if not actor.is_staff:
        proposals = proposals.filter(owner=actor)
    return _one(proposals, proposal_id, "Skill proposal")


def skill_adapters(*, actor, everyone: bool = False):
    """Skill adapters the actor may see: their own and the global ones (all for an admin)."""
    adapters = _adapter_artifacts().filter(current_version__body__scope="skill").select_related("current_version")
    if not (everyone and actor.is_staff):
        adapters = adapters.filter(Q(owner=actor) | Q(owner__isnull=True))
    return adapters.order_by("created_at")


def skill_adapters_by_cluster(*, actor) -> dict:
    """cluster id -> the skill adapter bound to it, for the clusters the actor is shown (an
    admin's view spans everyone's)."""
    return {a.body.get("cluster_id"): a for a in skill_adapters(actor=actor, everyone=True) if a.body}
