"""The write layer below the API: seeds that validate, and writes that change nothing record nothing."""

import pytest

from apps.artifacts import services
from apps.artifacts.models import Artifact
from apps.artifacts.seeds import TOOLS, TRAINING_POLICY, WORKFLOW, seeded_names
from apps.artifacts.validation import validate_body

pytestmark = pytest.mark.django_db


def test_every_seeded_body_passes_its_own_validation():
    for body in [*TOOLS, WORKFLOW, TRAINING_POLICY]:
        assert validate_body(body, owner=None) == body["kind"]
    seeded = Artifact.objects.filter(owner__isnull=True, name__in=seeded_names())
    assert seeded.count() == len(TOOLS) + 2 and all(a.current_version_id for a in seeded)


def test_a_write_that_changes_nothing_makes_no_version(user, workflow_body):
    artifact = services.artifact_create(actor=user, name="same", body=workflow_body)
    services.artifact_update(actor=user, artifact=artifact, body=workflow_body)
    services.artifact_patch(
        actor=user, artifact=artifact, patch=[{"op": "test", "path": "/kind", "value": "workflow.chat"}]
    )
    services.artifact_revert(actor=user, artifact=artifact, version=1)
    assert artifact.versions.count() == 1
    services.artifact_update(actor=user, artifact=artifact, description="now described")
    assert artifact.versions.count() == 2 and Artifact.objects.get(pk=artifact.pk).description == "now described"


def test_a_body_with_a_nul_character_is_refused_with_its_pointer(user, workflow_body):
    body = {**workflow_body, "defaults": {"system_prompt": "a\x00b"}}
    with pytest.raises(services.Invalid) as refused:
        services.artifact_create(actor=user, name="nul", body=body)
    assert refused.value.details["pointer"] == "/schema/defaults/system_prompt"
