"""The write layer below the API: seeds that validate, and writes that change nothing record nothing."""

import pytest

from apps.artifacts import services
from apps.artifacts.models import Artifact
from apps.artifacts.seeds import ARCHITECT_POLICY, ROUTING_POLICY, TOOLS, TRAINING_POLICY, WORKFLOW, seeded_names
from apps.artifacts.validation import validate_body

pytestmark = pytest.mark.django_db


def test_every_seeded_body_passes_its_own_validation():
    for body in [*TOOLS, WORKFLOW, TRAINING_POLICY, ROUTING_POLICY, ARCHITECT_POLICY]:
        assert validate_body(body, owner=None) == body["kind"]
    seeded = Artifact.objects.filter(owner__isnull=True, name__in=seeded_names())
    assert seeded.count() == len(TOOLS) + 4 and all(a.current_version_id for a in seeded)


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


def test_seeded_bodies_are_upgraded_only_where_the_system_wrote_the_current_version(user):
    from apps.artifacts.models import ArtifactVersion
    from apps.artifacts.seeds import upgrade_seeded
    from apps.artifacts.selectors import global_artifact

    workflow = global_artifact(kind="workflow.chat", name="chat.default")
    policy = global_artifact(kind="policy.training", name="training.default")
    old_workflow = {**WORKFLOW, "timeout_ms": 1000}
    for artifact, body in ((workflow, old_workflow), (policy, {**TRAINING_POLICY, "max_steps": 3})):
        current = artifact.current_version
        artifact.current_version = ArtifactVersion.objects.create(
            artifact=artifact, version=current.version + 1, body=body, created_by="system", parent=current
        )
        artifact.save(update_fields=["current_version"])
    services.artifact_update(  # an admin's edit
        actor=None, artifact=policy, body={**TRAINING_POLICY, "max_steps": 5}, created_by="user"
    )
    upgrade_seeded(Artifact, ArtifactVersion)
    workflow, policy = (Artifact.objects.get(pk=a.pk) for a in (workflow, policy))
    assert workflow.body == WORKFLOW and workflow.current_version.change_note.startswith("Upgraded")
    assert policy.body["max_steps"] == 5, "an edit is never overwritten"
    versions = workflow.versions.count()
    upgrade_seeded(Artifact, ArtifactVersion)
    assert workflow.versions.count() == versions, "nothing to do twice"


def test_a_name_resolves_to_the_users_own_artifact_before_the_global_one(user, workflow_body, make_user):
    from apps.artifacts.selectors import artifact_by_name, artifacts_by_names

    seeded = artifact_by_name(actor=user, kind="workflow.chat", name="chat.default")
    assert seeded.owner is None
    own = services.artifact_create(actor=user, name="chat.default", body=workflow_body)
    assert artifact_by_name(actor=user, kind="workflow.chat", name="chat.default").pk == own.pk
    assert artifact_by_name(actor=make_user(), kind="workflow.chat", name="chat.default").pk == seeded.pk
    found = artifacts_by_names(actor=user, kind="tool.spec", names=[t["name"] for t in TOOLS] + ["missing"])
    assert sorted(found) == sorted(t["name"] for t in TOOLS)


def test_routing_rules_are_parsed_and_name_checked_when_saved(user):
    from liminal.errors import Invalid

    def policy(when):
        action = {"type": "deactivate_all_adapters"}
        rules = [
            {"id": "ok", "when": "true", "action": action},
            {"id": "nearest_skill", "when": when, "action": action},
        ]
        body = {"kind": "policy.routing", "rules": rules}
        return services.artifact_create(actor=user, name=f"routing-{abs(hash(when))}", body=body)

    assert policy("safety_risk != 'high' and cosine_similarity(ctx_embedding, [1, 0]) > 0.5").current_version
    for when, fragment in [
        ("safety_risk = 'high'", "unexpected character '=' (at character 13)"),
        ("secret_flag == true", "unknown name 'secret_flag'"),
        ("__import__('os')", "unknown function '__import__'"),
    ]:
        with pytest.raises(Invalid) as refused:
            policy(when)
        assert refused.value.details["pointer"] == "/schema/rules/1/when"
        assert "rule 'nearest_skill'" in refused.value.message and fragment in refused.value.message


def test_a_prompt_is_filled_in_one_pass_and_other_braces_stay():
    from apps.artifacts.prompts import fill_prompt

    template = 'Q: {question}\nA: {answer}\nJSON: {"ops": []} {unknown}'
    filled = fill_prompt(template, {"question": "What does {answer} mean?", "answer": "A placeholder."})
    assert filled == 'Q: What does {answer} mean?\nA: A placeholder.\nJSON: {"ops": []} {unknown}'
