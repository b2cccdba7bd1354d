"""Writes of persona adapters: creating one, queuing a training job, promoting and rolling back.

Promotion is a data change: the `adapter.lora` artifact's body names its current version, and
every inference worker resolves that per request (`selectors.serving_adapters`), so it hot-swaps
on the next answer, on every node, without a restart.
"""

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.artifacts import services as artifact_services
from apps.artifacts.models import ArtifactVersion as BodyVersion
from apps.training import selectors
from apps.training.models import AdapterVersion, TrainingJob
from liminal.errors import Conflict, Forbidden, Invalid, NotFound, ensure_owner

TRAIN_TASK = "apps.training.tasks.train_adapter"


def persona_adapter_ensure(*, actor, rank: int = 8, alpha: float = 16.0):
    """The actor's persona adapter artifact, created (with no version yet) the first time."""
    adapter = selectors.persona_adapter(actor=actor)
    if adapter is not None:
        return adapter
    return artifact_services.artifact_create(
        actor=actor,
        name=selectors.PERSONA_ADAPTER_NAME,
        description="Your persona adapter: trained from your corrections, liked answers and picks.",
        body={
            "kind": "adapter.lora",
            "scope": "user",
            "base_model": settings.SERVED_MODEL_ID,
            "rank": rank,
            "alpha": alpha,
            "current_version": None,
        },
        created_by=BodyVersion.CreatedBy.SYSTEM,
    )


def training_job_create(*, actor, trigger: str = TrainingJob.Trigger.MANUAL) -> TrainingJob:
    """A job for the actor's persona adapter (409 while one is queued or running), handed to the
    `train` queue once the transaction commits. The task is sent by name: the training tasks
    import these services, not the other way round."""
    return training_job_for(adapter=persona_adapter_ensure(actor=actor), owner=actor, trigger=trigger)


def training_job_for(*, adapter, owner, trigger: str = TrainingJob.Trigger.MANUAL) -> TrainingJob:
    """A job for one of `owner`'s adapters (persona or skill; 409 while one is queued or
    running), queued once the transaction commits."""
    try:
        with transaction.atomic():
            job = TrainingJob.objects.create(owner=owner, adapter=adapter, trigger=trigger)
    except IntegrityError as exc:
        raise Conflict("A training job for this adapter is already queued or running.") from exc
    transaction.on_commit(lambda: training_job_send(job))
    return job


def training_job_send(job: TrainingJob, *, now=None) -> None:
    """Send the job's task message and note when (the reaper sends a lost one again)."""
    from celery import current_app

    TrainingJob.objects.filter(pk=job.pk).update(sent_at=now or timezone.now())
    current_app.send_task(TRAIN_TASK, args=[str(job.pk)], queue="train")


def _fresh(adapter):
    from apps.artifacts.models import Artifact

    return Artifact.objects.select_related("current_version", "owner").get(pk=adapter.pk)


def _set_current(adapter, number: int | None, note: str) -> None:
    adapter = _fresh(adapter)
    body = {**adapter.body, "current_version": number}
    artifact_services.artifact_update(
        actor=None if adapter.owner is None else adapter.owner,
        artifact=adapter,
        body=body,
        change_note=note,
        created_by=BodyVersion.CreatedBy.SYSTEM,
    )


@transaction.atomic
def version_promote(*, version: AdapterVersion, note: str = "Passed the gate.") -> AdapterVersion:
    version.status = AdapterVersion.Status.PROMOTED
    version.promoted_at = timezone.now()
    version.save(update_fields=["status", "promoted_at"])
    _set_current(version.adapter, version.version, f"Promoted version {version.version}: {note}")
    return version


@transaction.atomic
def version_approve(*, actor, version: AdapterVersion) -> AdapterVersion:
    """Serve a version the gate did not promote (or one rolled back earlier). Only an admin may
    overrule the gate; the owner may bring back a version that passed it. A version trained on
    forgotten signals is never served again."""
    if not actor.is_staff:
        ensure_owner(version, actor, "Adapter version not found.")
    version = AdapterVersion.objects.select_for_update().select_related("adapter").get(pk=version.pk)
    if version.tainted_at is not None:
        raise Conflict("This version was trained on signals that were since deleted; train a new one.")
    current = selectors.promoted_version(adapter=version.adapter)
    if current is not None and current.pk == version.pk:
        raise Conflict("This version is already being served.")
    passed = bool((version.evaluation or {}).get("passed"))
    if not passed and not actor.is_staff:
        raise Forbidden("Only an admin can promote a version the gate rejected.")
    # Serving a newer version keeps the one served until now promoted, as a promotion by the gate
    # does (rolling back returns to it); bringing back an older one is a rollback of the newer.
    if current is not None and current.version > version.version:
        current.status = AdapterVersion.Status.ROLLED_BACK
        current.save(update_fields=["status"])
    if not passed:
        version.evaluation = {
            **(version.evaluation or {}),
            "approved_by": actor.get_username(),
            "approved_at": timezone.now().isoformat(),
        }
        version.save(update_fields=["evaluation"])
    how = "approved by an admin over the gate" if not passed else "brought back by its owner"
    return version_promote(version=version, note=how)


@transaction.atomic
def adapter_rollback(*, actor, adapter, to_version: int | None = None) -> AdapterVersion | None:
    """Stop serving the current version: serve `to_version` (an earlier promoted one), or else
    the previous promoted version, or else the base model. Returns what is now served. The
    owner or an admin may do it."""
    if not actor.is_staff:
        ensure_owner(adapter, actor, "Adapter not found.")
    adapter = _fresh(adapter)
    current = selectors.promoted_version(adapter=adapter)
    if current is None and to_version is None:
        raise Conflict("Nothing to roll back: the base model is already being used.")
    earlier = AdapterVersion.objects.filter(adapter=adapter, status=AdapterVersion.Status.PROMOTED)
    if to_version is not None:
        target = earlier.filter(version=to_version).first()
        if target is None:
            raise NotFound(f"Version {to_version} was never promoted.")
        if current is not None and target.pk == current.pk:
            raise Invalid("That version is the one being served.", field="to_version")
    else:
        target = earlier.filter(version__lt=current.version, tainted_at=None).order_by("-version").first()
    if current is not None:
        current.status = AdapterVersion.Status.ROLLED_BACK
        current.save(update_fields=["status"])
    _set_current(
        adapter,
        target.version if target else None,
        f"Rolled back to {'version ' + str(target.version) if target else 'the base model'}.",
    )
    return target
