"""The architect's Celery tasks: one artifact on an admin's request (POST /v1/config/auto_patch),
and the nightly run over the targets of the global `architect.default` policy. They run on the
`inference` queue (routed in apps.py), whose workers hold the engine.

An admin's goal is free text: it waits on the ArchitectRequest row, and only the row's id
travels in the task message."""

from celery import shared_task

from apps.configops import architect, services
from apps.configops.models import ArchitectRequest, ConfigPatch


def _outcome(patch: ConfigPatch) -> dict:
    return {"status": patch.status, "patch_id": str(patch.pk), "failure_reason": patch.failure_reason}


@shared_task(acks_late=False)
def architect_propose(request_id: str) -> dict:
    request = ArchitectRequest.objects.select_related("artifact").filter(pk=request_id).first()
    if request is None:
        return {"status": "skipped", "reason": "The request (or its artifact) no longer exists."}
    if request.patch_id is not None:
        return {"status": "skipped", "reason": "The request was answered already.", "patch_id": str(request.patch_id)}
    patch = architect.propose(artifact=request.artifact, generate=architect.engine_generate, goal=request.goal)
    services.architect_request_finish(request=request, patch=patch)
    return _outcome(patch)


@shared_task(acks_late=False)
def architect_nightly() -> list[dict]:
    return [
        _outcome(architect.propose(artifact=artifact, generate=architect.engine_generate))
        for artifact in architect.targets()
    ]
