"""Writes of topics and skills: signals clustered as they arrive, the periodic pass that merges,
splits and retires clusters, the model's labels, and skill proposals with their approval.

Every live signal with a prompt embedding sits in one of its owner's clusters and in one global
cluster. A user's cluster holds only that user's signals; a skill proposed from it is an
adapter of that user's, trained on that cluster's signals only (never on another user's). The
global clusters are the admins' view of what everyone asks about. The numbers live in
`workers.cluster`; the thresholds in the `clustering` section of the training policy.
"""

import logging
import re

import jsonschema
import numpy as np
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.artifacts import services as artifact_services
from apps.artifacts.models import ArtifactVersion as BodyVersion
from apps.artifacts.selectors import global_artifact
from apps.training import adapters
from apps.training.models import (
    ClusterMembership,
    PreferenceEvent,
    SemanticCluster,
    SkillProposal,
    TrainingJob,
)
from liminal.errors import Conflict, Forbidden, ensure_owner
from workers.cluster import (
    ClusterView,
    Thresholds,
    assign,
    cohesion,
    merge_plan,
    reassignments,
    running_mean,
    split_in_two,
)
from workers.cluster.labels import DEFAULT_PROMPT, LABEL_SCHEMA

logger = logging.getLogger(__name__)

CLUSTER_EVENT_TASK = "apps.training.tasks.cluster_event"
CLUSTER_LABEL_TASK = "apps.training.tasks.cluster_label"
SKILL_DEFAULTS = {"min_events": 20, "min_positive_ratio": 0.7, "min_cohesion": 0.6, "auto_approve": False}
# A pass merges until nothing is close enough; a chain of near-duplicates settles in one pass.
MAX_MERGE_ROUNDS = 10


def clustering_policy() -> dict:
    artifact = global_artifact(kind="policy.training", name="training.default")
    section = dict((artifact.body if artifact is not None else {}).get("clustering") or {})
    section["skill"] = {**SKILL_DEFAULTS, **(section.get("skill") or {})}
    section.setdefault("label_samples", 6)
    section.setdefault("label_prompt", DEFAULT_PROMPT)
    return section


def thresholds(policy: dict | None = None) -> Thresholds:
    return Thresholds.from_dict(policy if policy is not None else clustering_policy())


def _is_positive(event: PreferenceEvent) -> bool:
    """A liked answer or a pick: the user wants more answers like it."""
    return (event.score or 0) > 0 or event.kind in (PreferenceEvent.Kind.THUMBS_UP, PreferenceEvent.Kind.PICK)


def _clusterable(event: PreferenceEvent) -> bool:
    return (
        event.is_training_data
        and event.prompt_embedding is not None
        and event.kind != PreferenceEvent.Kind.ROUTING
        and event.superseded_by_id is None
    )


def _scopes(event):
    return ((ClusterMembership.Scope.USER, event.owner_id), (ClusterMembership.Scope.GLOBAL, None))


def _live_clusters(owner_id):
    return SemanticCluster.objects.filter(owner_id=owner_id, status__in=SemanticCluster.LIVE).order_by("created_at")


def queue_event(event: PreferenceEvent) -> None:
    """Cluster the event on the `cluster` queue once it is committed (sent by name: the tasks
    import these services)."""

    def send():
        from celery import current_app

        try:
            current_app.send_task(CLUSTER_EVENT_TASK, args=[str(event.pk)], queue="cluster")
        except Exception:
            # The periodic pass picks up any live event left out of a cluster.
            logger.exception("Queuing event %s for clustering failed", event.pk)

    transaction.on_commit(send)


@transaction.atomic
def cluster_event_add(*, event: PreferenceEvent, policy: dict | None = None) -> list[SemanticCluster]:
    """Place one signal in its owner's clusters and the global ones (again: nothing changes).
    Returns the clusters it joined or started."""
    event = PreferenceEvent.objects.select_for_update().filter(pk=event.pk).first()
    if event is None or not _clusterable(event):
        return []
    policy = clustering_policy() if policy is None else policy
    limits = thresholds(policy)
    vector = np.asarray(event.prompt_embedding, dtype=np.float64)
    placed = []
    for scope, owner_id in _scopes(event):
        if ClusterMembership.objects.filter(event=event, scope=scope).exists():
            continue
        # One writer per scope at a time, so two events of a new topic cannot both start one.
        clusters = list(_live_clusters(owner_id).select_for_update())
        views = [ClusterView(str(c.pk), np.asarray(c.centroid), c.size) for c in clusters]
        chosen_id, similarity = assign(vector, views, limits.join_similarity)
        if chosen_id is None:
            cluster = SemanticCluster.objects.create(owner_id=owner_id, centroid=vector.tolist(), size=0)
        else:
            cluster = next(c for c in clusters if str(c.pk) == chosen_id)
            cluster.centroid = running_mean(cluster.centroid, cluster.size, vector).tolist()
        cluster.size += 1
        cluster.positive_count += int(_is_positive(event))
        cluster.positive_ratio = cluster.positive_count / cluster.size
        if len(cluster.sample_event_ids) < int(policy["label_samples"]):
            cluster.sample_event_ids = [*cluster.sample_event_ids, str(event.pk)]
        if cluster.status == SemanticCluster.Status.FORMING and cluster.size >= limits.active_size:
            cluster.status = SemanticCluster.Status.ACTIVE
        cluster.updated_at = timezone.now()
        cluster.save()
        ClusterMembership.objects.create(cluster=cluster, event=event, scope=scope, similarity=similarity)
        if scope == ClusterMembership.Scope.USER:
            PreferenceEvent.objects.filter(pk=event.pk).update(cluster_id=str(cluster.pk))
        placed.append(cluster)
    for cluster in placed:
        _after_change(cluster, policy)
    return placed


def _live_members(cluster):
    return ClusterMembership.objects.filter(
        cluster=cluster,
        event__excluded_at=None,
        event__is_evaluation=False,
        event__prompt_embedding__isnull=False,
    ).select_related("event")


def _recompute(cluster: SemanticCluster, limits: Thresholds, sample_count: int) -> list[ClusterMembership]:
    """Centroid, size, ratios and samples from the cluster's live members (a forgotten signal
    leaves the cluster here, if it had not already); an empty cluster is retired."""
    members = list(_live_members(cluster))
    ClusterMembership.objects.filter(cluster=cluster).exclude(pk__in=[m.pk for m in members]).delete()
    if not members:
        cluster.size = cluster.positive_count = 0
        cluster.positive_ratio = 0.0
        cluster.sample_event_ids = []
        cluster.status = SemanticCluster.Status.RETIRED
    else:
        vectors = np.asarray([m.event.prompt_embedding for m in members], dtype=np.float64)
        centroid = vectors.mean(axis=0)
        cluster.centroid = centroid.tolist()
        cluster.size = len(members)
        cluster.positive_count = sum(_is_positive(m.event) for m in members)
        cluster.positive_ratio = cluster.positive_count / cluster.size
        cluster.cohesion = cohesion(vectors, centroid)
        nearest = np.argsort(-(vectors @ centroid), kind="stable")[:sample_count]
        cluster.sample_event_ids = [str(members[i].event_id) for i in nearest]
        if cluster.status == SemanticCluster.Status.FORMING and cluster.size >= limits.active_size:
            cluster.status = SemanticCluster.Status.ACTIVE
    cluster.updated_at = timezone.now()
    cluster.save()
    return members


def _move_members(members, target: SemanticCluster) -> None:
    ids = [m.pk for m in members]
    ClusterMembership.objects.filter(pk__in=ids).update(cluster=target)
    user_events = [m.event_id for m in members if m.scope == ClusterMembership.Scope.USER]
    PreferenceEvent.objects.filter(pk__in=user_events).update(cluster_id=str(target.pk))


@transaction.atomic
def clusters_maintain_scope(*, owner_id, policy: dict | None = None) -> dict:
    """The periodic pass over one scope (a user's clusters, or the global ones with None):
    recompute from the live members, drain fragments into the larger cluster they fit, merge
    the close, split the loose, retire the empty. Ids never change: members only move to larger
    clusters, the larger of two merged clusters and the larger half of a split keep theirs."""
    policy = clustering_policy() if policy is None else policy
    limits = thresholds(policy)
    samples = int(policy["label_samples"])
    report = {"reassigned": 0, "merged": [], "split": [], "retired": []}
    clusters = list(_live_clusters(owner_id).select_for_update())
    members = {c.pk: _recompute(c, limits, samples) for c in clusters}

    def live():
        return [c for c in clusters if c.status in SemanticCluster.LIVE]

    for _ in range(MAX_MERGE_ROUNDS):
        by_id = {str(c.pk): c for c in live()}
        groups = [(key, [m.event.prompt_embedding for m in members[c.pk]]) for key, c in by_id.items()]
        moves = reassignments(groups, limits.join_similarity)
        for source_id, target_id in {(source, target) for source, _, target in moves}:
            source, target = by_id[source_id], by_id[target_id]
            leaving = [members[source.pk][i] for s, i, t in moves if s == source_id and t == target_id]
            _move_members(leaving, target)
        for key in {source for source, _, _ in moves} | {target for _, _, target in moves}:
            members[by_id[key].pk] = _recompute(by_id[key], limits, samples)
        report["reassigned"] += len(moves)

        views = [ClusterView(str(c.pk), np.asarray(c.centroid), c.size) for c in live()]
        plan = merge_plan(views, limits.merge_similarity)
        for absorbed_id, survivor_id, similarity in plan:
            absorbed, survivor = by_id[absorbed_id], by_id[survivor_id]
            _move_members(members.pop(absorbed.pk), survivor)
            absorbed.status = SemanticCluster.Status.MERGED
            absorbed.merged_into = survivor
            absorbed.size = absorbed.positive_count = 0
            absorbed.updated_at = timezone.now()
            absorbed.save()
            members[survivor.pk] = _recompute(survivor, limits, samples)
            report["merged"].append({"from": absorbed_id, "into": survivor_id, "similarity": round(similarity, 4)})
        if not moves and not plan:
            break

    for cluster in live():
        if cluster.size < limits.min_split_size or cluster.cohesion >= limits.split_cohesion:
            continue
        cluster_members = members[cluster.pk]
        keep = split_in_two([m.event.prompt_embedding for m in cluster_members])
        if keep.all() or not keep.any():
            continue
        leaving = [m for m, stays in zip(cluster_members, keep, strict=True) if not stays]
        vectors = np.asarray([m.event.prompt_embedding for m in leaving], dtype=np.float64)
        newcomer = SemanticCluster.objects.create(owner_id=owner_id, centroid=vectors.mean(axis=0).tolist())
        _move_members(leaving, newcomer)
        members[cluster.pk] = _recompute(cluster, limits, samples)
        members[newcomer.pk] = _recompute(newcomer, limits, samples)
        clusters.append(newcomer)
        report["split"].append({"cluster": str(cluster.pk), "new": str(newcomer.pk)})

    report["retired"] = [str(c.pk) for c in clusters if c.status == SemanticCluster.Status.RETIRED]
    for cluster in live():
        _after_change(cluster, policy)
    return report


def clusters_maintain(*, policy: dict | None = None) -> dict:
    """Beat's pass over every scope, and a sweep for live signals no cluster holds yet (their
    task was lost). One scope per transaction, so a long pass never holds every lock."""
    policy = clustering_policy() if policy is None else policy
    unplaced = PreferenceEvent.objects.filter(
        excluded_at=None, is_evaluation=False, superseded_by=None, prompt_embedding__isnull=False
    ).exclude(kind=PreferenceEvent.Kind.ROUTING)
    unplaced = unplaced.exclude(pk__in=ClusterMembership.objects.filter(scope="global").values("event_id"))
    for event in unplaced.order_by("created_at")[:1000]:
        cluster_event_add(event=event, policy=policy)
    owners = set(
        SemanticCluster.objects.filter(status__in=SemanticCluster.LIVE).values_list("owner_id", flat=True).distinct()
    )
    reports = {}
    for owner_id in sorted(owners, key=lambda o: (o is not None, o or 0)):
        reports[str(owner_id) if owner_id else "global"] = clusters_maintain_scope(owner_id=owner_id, policy=policy)
    return reports


def _after_change(cluster: SemanticCluster, policy: dict) -> None:
    """Once committed: ask the model for a label when the cluster became active or has doubled
    since its last label; see whether a user's cluster now qualifies as a skill."""
    if cluster.status != SemanticCluster.Status.ACTIVE:
        return
    if needs_label(cluster):
        pk = str(cluster.pk)

        def send():
            from celery import current_app

            try:
                current_app.send_task(CLUSTER_LABEL_TASK, args=[pk], queue="cluster")
            except Exception:
                logger.exception("Queuing cluster %s for a label failed", pk)

        transaction.on_commit(send)
    if cluster.owner_id is not None:
        skill_proposal_check(cluster=cluster, policy=policy)


def needs_label(cluster: SemanticCluster) -> bool:
    return cluster.status == SemanticCluster.Status.ACTIVE and cluster.size >= max(1, 2 * cluster.labelled_at_size)


def label_samples(cluster: SemanticCluster) -> list[str]:
    """The prompts nearest the centroid: what the model reads to name the topic."""
    rows = PreferenceEvent.objects.filter(pk__in=cluster.sample_event_ids).values_list("pk", "prompt")
    prompts = {str(pk): prompt for pk, prompt in rows}
    return [prompts[p] for p in map(str, cluster.sample_event_ids) if prompts.get(p)]


@transaction.atomic
def cluster_label_set(*, cluster: SemanticCluster, labelled: dict) -> SemanticCluster:
    """Store the model's label (checked against the label schema) and the size it was given at."""
    jsonschema.validate(labelled, LABEL_SCHEMA)
    cluster = SemanticCluster.objects.select_for_update().get(pk=cluster.pk)
    cluster.label = labelled["label"]
    cluster.description = labelled["description"]
    cluster.labelled_at_size = cluster.size
    cluster.updated_at = timezone.now()
    cluster.save(update_fields=["label", "description", "labelled_at_size", "updated_at"])
    SkillProposal.objects.filter(cluster=cluster, status=SkillProposal.Status.PENDING).update(
        evidence={**_evidence(cluster)}
    )
    return cluster


def _evidence(cluster: SemanticCluster) -> dict:
    return {
        "size": cluster.size,
        "positive_ratio": round(cluster.positive_ratio, 4),
        "cohesion": round(cluster.cohesion, 4),
        "label": cluster.label,
        "description": cluster.description,
    }


def skill_proposal_check(*, cluster: SemanticCluster, policy: dict | None = None) -> SkillProposal | None:
    """A user's active cluster that is big, liked and cohesive enough, with no adapter yet,
    proposes one skill (once: a dismissed proposal is not made again)."""
    if cluster.owner_id is None or cluster.status != SemanticCluster.Status.ACTIVE:
        return None
    rules = (clustering_policy() if policy is None else policy)["skill"]
    if (
        cluster.size < int(rules["min_events"])
        or cluster.positive_ratio < float(rules["min_positive_ratio"])
        or cluster.cohesion < float(rules["min_cohesion"])
    ):
        return None
    if SkillProposal.objects.filter(cluster=cluster).exists():
        return None
    try:
        with transaction.atomic():
            proposal = SkillProposal.objects.create(
                owner_id=cluster.owner_id, cluster=cluster, evidence=_evidence(cluster)
            )
    except IntegrityError:
        return None  # proposed by a concurrent pass
    if rules.get("auto_approve"):
        _approve(proposal, decided_by=None, reason="Approved by the training policy (auto_approve).")
    return proposal


def _skill_name(cluster: SemanticCluster) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", (cluster.label or "").lower()).strip("-")[:60]
    return f"skill-{slug}-{str(cluster.pk)[:8]}" if slug else f"skill-{str(cluster.pk)[:8]}"


def _approve(proposal: SkillProposal, *, decided_by, reason: str) -> SkillProposal:
    cluster = proposal.cluster
    adapter = artifact_services.artifact_create(
        actor=proposal.owner,
        name=_skill_name(cluster),
        description=cluster.label or "A skill adapter for one of your topics.",
        body={
            "kind": "adapter.lora",
            "scope": "skill",
            "base_model": settings.SERVED_MODEL_ID,
            "rank": 8,
            "alpha": 16.0,
            "current_version": None,
            "cluster_id": str(cluster.pk),
            "applicability": cluster.description or cluster.label or "",
        },
        created_by=BodyVersion.CreatedBy.SYSTEM,
        change_note=f"Proposed from cluster {cluster.pk} ({cluster.size} signals).",
    )
    job = adapters.training_job_for(adapter=adapter, owner=proposal.owner, trigger=TrainingJob.Trigger.MANUAL)
    proposal.status = SkillProposal.Status.APPROVED
    proposal.adapter, proposal.job = adapter, job
    proposal.decided_by, proposal.decided_at, proposal.reason = decided_by, timezone.now(), reason
    proposal.save()
    return proposal


@transaction.atomic
def skill_proposal_approve(*, actor, proposal: SkillProposal, reason: str = "") -> SkillProposal:
    """An admin approves: the skill adapter is created for the cluster's owner and its first
    training job queued (on that cluster's signals)."""
    if not actor.is_admin:
        raise Forbidden("Only an admin can approve a skill proposal.")
    proposal = SkillProposal.objects.select_for_update().select_related("cluster", "owner").get(pk=proposal.pk)
    if proposal.status != SkillProposal.Status.PENDING:
        raise Conflict(f"This proposal is already {proposal.get_status_display().lower()}.")
    return _approve(proposal, decided_by=actor, reason=reason or "Approved by an admin.")


@transaction.atomic
def skill_proposal_dismiss(*, actor, proposal: SkillProposal, reason: str = "") -> SkillProposal:
    """The owner or an admin turns a proposal down; the cluster is not proposed again."""
    if not actor.is_admin:
        ensure_owner(proposal, actor, "Skill proposal not found.")
    proposal = SkillProposal.objects.select_for_update().get(pk=proposal.pk)
    if proposal.status != SkillProposal.Status.PENDING:
        raise Conflict(f"This proposal is already {proposal.get_status_display().lower()}.")
    proposal.status = SkillProposal.Status.DISMISSED
    proposal.decided_by, proposal.decided_at = actor, timezone.now()
    proposal.reason = (reason or "").replace("\x00", "")[:2000]
    proposal.save()
    return proposal


def cluster_event_ids(*, cluster_id, owner) -> list[str]:
    """The live signals of the owner's cluster (following merges to the survivor): what a
    skill adapter bound to it trains on."""
    cluster = SemanticCluster.objects.filter(pk=cluster_id, owner=owner).first()
    seen = set()
    while cluster is not None and cluster.status == SemanticCluster.Status.MERGED and cluster.pk not in seen:
        seen.add(cluster.pk)
        cluster = cluster.merged_into
    if cluster is None or cluster.owner_id != getattr(owner, "pk", owner):
        return []
    return [str(m.event_id) for m in _live_members(cluster).filter(scope=ClusterMembership.Scope.USER)]


def memberships_forget(events) -> None:
    """A forgotten signal leaves its clusters at once; the next pass recomputes their centroids."""
    ClusterMembership.objects.filter(event__in=events).delete()
