"""The architect's Celery tasks: one artifact on request (POST /v1/config/auto_patch), and the
nightly run over the artifacts settings.CONFIGOPS_ARCHITECT_TARGETS names. They run on the
`inference` queue (routed in apps.py), whose workers hold the engine."""

from celery import shared_task

from apps.artifacts.models import Artifact
from apps.configops import architect


@shared_task(acks_late=False)
def architect_propose(artifact_id: str, goal: str = "") -> dict:
    artifact = Artifact.objects.filter(pk=artifact_id).first()
    if artifact is None:
        return {"status": "skipped", "reason": "The artifact no longer exists."}
    patch = architect.propose(artifact=artifact, generate=architect.engine_generate, goal=goal)
    return {"status": patch.status, "patch_id": str(patch.pk), "failure_reason": patch.failure_reason}


@shared_task(acks_late=False)
def architect_nightly() -> list[dict]:
    return [architect_propose(str(artifact.pk)) for artifact in architect.targets()]
