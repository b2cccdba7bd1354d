"""The architect: its prompt carries the artifact, its schema and the metrics; what it writes is
parsed and validated, proposed as a pending patch when it is one, kept as a failed patch with
the reason when it is not, and never applied. The model itself is replaced by canned outputs
here; the slow test asks the real one."""

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from apps.artifacts import seeds
from apps.artifacts import services as artifact_services
from apps.artifacts.selectors import global_artifact
from apps.artifacts.validation import kind_schema
from apps.configops import architect, services, tasks
from apps.configops.models import ArchitectRequest, ConfigPatch
from apps.configops.tests.conftest import SKILL_RULE
from apps.knowledge.models import KnowledgeGap
from apps.training.models import PreferenceEvent
from liminal.errors import Invalid

pytestmark = pytest.mark.django_db

GOOD = json.dumps(
    {
        "ops": [{"op": "replace", "path": "/weight_floor", "value": 0.1}],
        "justification": "Drop adapters that barely contribute.",
    }
)


def canned(text):
    prompts = []

    def generate(prompt):
        prompts.append(prompt)
        return text

    generate.prompts = prompts
    return generate


def test_the_prompt_holds_the_artifact_its_schema_the_metrics_and_the_goal(routing_default, user):
    for kind in ("thumbs_up", "thumbs_up", "thumbs_down"):
        PreferenceEvent.objects.create(owner=user, kind=kind, prompt="p", answer="a")
    PreferenceEvent.objects.create(owner=user, kind="routing", feedback="negative", prompt="p", answer="a")
    KnowledgeGap.objects.create(owner=user, query="What is the office's wifi password?")
    metrics = architect.recent_metrics()
    assert metrics["thumbs_up"] == 2 and metrics["thumbs_down"] == 1 and metrics["satisfaction"] == 0.667
    assert metrics["routing_feedback"] == {"total": 1, "positive": 0, "negative": 1}
    assert metrics["knowledge_gaps"] == {"new": 1, "open": 1}
    generate = canned(GOOD)
    architect.propose(artifact=routing_default, generate=generate, goal="Fewer wrong skills.")
    (prompt,) = generate.prompts
    assert '"nearest_skill"' in prompt and '"max_active_adapters"' in prompt and "Fewer wrong skills." in prompt
    assert '"satisfaction":0.667' in prompt
    assert "wifi password" not in prompt  # aggregates only, never a user's words


def _edit_policy(**fields):
    policy = global_artifact(kind="policy.architect", name=seeds.DEFAULT_ARCHITECT_POLICY)
    artifact_services.artifact_update(actor=None, artifact=policy, body={**policy.body, **fields}, change_note="Test.")


def test_the_seeded_policy_asks_for_a_patch_of_the_documented_form(routing_default):
    prompt = architect.build_prompt(artifact=routing_default, metrics={"days": 7})
    assert prompt.startswith("JSON Schema of a policy.routing artifact:\n{")
    assert '{"ops": [{"op": "replace", "path": "/some/path", "value": 1}]' in prompt
    assert "Goal: Improve the users' satisfaction with the smallest safe change." in prompt
    assert "{goal}" not in prompt and "{body}" not in prompt
    schema = kind_schema("policy.architect")
    assert set(schema["properties"]["targets"]["items"]["properties"]["kind"]["enum"]) == set(architect.ARCHITECT_KINDS)


def test_prompt_goal_window_length_and_targets_come_from_the_architect_policy(
    monkeypatch, routing_default, chat_default, user, new_mirror_files
):
    _edit_policy(
        prompt="Patch {name} ({kind}) toward: {goal}\nNow: {body}\nSchema: {schema}\nMetrics: {metrics}",
        default_goal="Route fewer messages to skills.",
        targets=[{"kind": "workflow.chat", "name": "chat.default"}],
        metrics_days=30,
        max_tokens=64,
    )
    old = PreferenceEvent.objects.create(owner=user, kind="thumbs_down", prompt="p", answer="a")
    PreferenceEvent.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=20))
    generate = canned(GOOD)
    architect.propose(artifact=routing_default, generate=generate)
    (prompt,) = generate.prompts
    assert prompt.startswith("Patch routing.default (policy.routing) toward: Route fewer messages to skills.\n")
    assert '"days":30' in prompt and '"thumbs_down":1' in prompt, "20 days ago is inside a 30-day window"

    asked = []

    class Engine:
        def render_chat(self, messages):
            return messages[0]["content"]

        def generate(self, prompt, params, truncate):
            asked.append(params.max_tokens)
            return type("Result", (), {"text": GOOD})()

    monkeypatch.setattr("apps.conversations.engine_runtime.get_engine", lambda: Engine())
    architect.engine_generate("a prompt")
    assert asked == [64]

    monkeypatch.setattr(architect, "engine_generate", canned(GOOD))
    nightly = tasks.architect_nightly()
    assert [ConfigPatch.objects.get(pk=result["patch_id"]).artifact for result in nightly] == [chat_default]


@pytest.mark.parametrize(
    "op, pointer",
    [
        ({"op": "replace", "path": "/prompt", "value": "Improve {name}."}, "/schema/prompt"),
        ({"op": "replace", "path": "/prompt", "value": "Fix {body} by {schema}."}, "/schema/prompt"),
        (
            {"op": "add", "path": "/targets/-", "value": {"kind": "workflow.chat", "name": "no.such"}},
            "/schema/targets/2/name",
        ),
        ({"op": "add", "path": "/targets/-", "value": {"kind": "adapter.lora", "name": "x"}}, "/schema/targets/2/kind"),
        ({"op": "replace", "path": "/max_tokens", "value": 100000}, "/schema/max_tokens"),
    ],
)
def test_a_broken_architect_policy_is_refused_and_the_current_one_kept(api, admin, op, pointer):
    policy = global_artifact(kind="policy.architect", name=seeds.DEFAULT_ARCHITECT_POLICY)
    response = api(admin).patch(f"/v1/artifacts/{policy.pk}", {"patch": [op]}, format="json")
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "validation_error" and error["details"]["pointer"] == pointer, error
    policy.refresh_from_db()
    assert policy.body == seeds.ARCHITECT_POLICY


def test_only_the_global_architect_policy_exists(api, user):
    response = api(user).post(
        "/v1/artifacts", {"name": "mine", "schema": {**seeds.ARCHITECT_POLICY, "targets": []}}, format="json"
    )
    assert response.status_code == 400 and response.json()["error"]["details"]["pointer"] == "/schema/kind"


@pytest.mark.parametrize(
    "output",
    [GOOD, f"Here is my proposal:\n```json\n{GOOD}\n```\nThanks!"],
)
def test_a_valid_proposal_is_pending_from_the_model_and_not_applied(routing_default, output):
    before = routing_default.current_version_id
    patch = architect.propose(artifact=routing_default, generate=canned(output))
    assert patch.status == "pending" and patch.proposer == "system_llm" and patch.proposed_by is None
    assert patch.ops == [{"op": "replace", "path": "/weight_floor", "value": 0.1}]
    assert patch.justification == "Drop adapters that barely contribute." and patch.dry_run["valid"]
    routing_default.refresh_from_db()
    assert routing_default.current_version_id == before


@pytest.mark.parametrize(
    ("output", "reason"),
    [
        ("I think the threshold should be lower.", "holds no JSON"),
        ('{"ops": [{"op": "replace", "path": "/weight_floor"}], "justification": "x"}', "JSON pointer /ops/0"),
        ('{"ops": [{"op": "replace", "path": "/weight_floor", "value": 1}]}', "'justification' is a required"),
        ('{"ops": [], "justification": "nothing"}', "JSON pointer /ops"),
        (
            '{"ops": [{"op": "replace", "path": "/max_active_adapters", "value": 7}], "justification": "more"}',
            "JSON pointer /max_active_adapters",
        ),
        (
            f'{{"ops": [{{"op": "test", "path": "{SKILL_RULE}/id", "value": "x"}}], "justification": "t"}}',
            "test operation",
        ),
    ],
)
def test_an_output_that_is_not_a_valid_patch_is_kept_failed_with_the_reason(routing_default, output, reason):
    before = routing_default.current_version_id
    patch = architect.propose(artifact=routing_default, generate=canned(output))
    assert patch.status == "failed" and reason in patch.failure_reason, patch.failure_reason
    assert patch.model_output == output and patch.proposer == "system_llm"
    routing_default.refresh_from_db()
    assert routing_default.current_version_id == before


def test_a_model_that_cannot_be_reached_is_a_failed_proposal(routing_default):
    def broken(prompt):
        raise RuntimeError("no engine here")

    patch = architect.propose(artifact=routing_default, generate=broken)
    assert patch.status == "failed" and "no engine here" in patch.failure_reason


def test_the_tasks_propose_for_the_nightly_targets(monkeypatch, routing_default, chat_default):
    monkeypatch.setattr(architect, "engine_generate", canned(GOOD))
    results = tasks.architect_nightly()
    assert len(results) == 2
    by_artifact = {patch.artifact_id: patch for patch in ConfigPatch.objects.all()}
    assert by_artifact[routing_default.pk].status == "pending"
    assert by_artifact[chat_default.pk].status == "failed"  # a workflow has no /weight_floor to replace
    assert tasks.architect_propose("00000000-0000-0000-0000-000000000000")["status"] == "skipped"


def test_auto_patch_queues_the_architect_for_admins(
    monkeypatch, api, admin, routing_default, django_capture_on_commit_callbacks
):
    queued = []
    monkeypatch.setattr(tasks.architect_propose, "apply_async", lambda args, **options: queued.append((args, options)))
    with django_capture_on_commit_callbacks(execute=True):
        response = api(admin).post(
            "/v1/config/auto_patch", {"artifact_id": str(routing_default.pk), "goal": "Fewer skills."}, format="json"
        )
    assert response.status_code == 202, response.content
    request = ArchitectRequest.objects.get()
    assert (request.artifact, request.requested_by, request.goal) == (routing_default, admin, "Fewer skills.")
    assert response.json()["data"] == {
        "queued": True,
        "task_id": str(request.pk),
        "artifact_id": str(routing_default.pk),
    }
    assert queued == [((str(request.pk),), {"task_id": str(request.pk)})]  # the id only, not the goal


def test_auto_patch_refuses_the_architects_own_policy_in_the_envelope(monkeypatch, api, admin):
    monkeypatch.setattr(tasks.architect_propose, "apply_async", lambda *args, **kwargs: pytest.fail("queued"))
    policy = global_artifact(kind="policy.architect", name=seeds.DEFAULT_ARCHITECT_POLICY)
    response = api(admin).post("/v1/config/auto_patch", {"artifact_id": str(policy.pk)}, format="json")
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "validation_error" and "its own policy" in error["message"]
    assert not ArchitectRequest.objects.exists()


def test_the_task_proposes_with_the_requests_goal_once(monkeypatch, admin, routing_default):
    prompts = []

    def generate(prompt):
        prompts.append(prompt)
        return GOOD

    monkeypatch.setattr(architect, "engine_generate", generate)
    monkeypatch.setattr(tasks.architect_propose, "apply_async", lambda *args, **kwargs: None)
    queued = services.architect_request(actor=admin, artifact_id=routing_default.pk, goal="Fewer wrong skills.")
    outcome = tasks.architect_propose(queued["task_id"])
    assert outcome["status"] == "pending" and "Fewer wrong skills." in prompts[0]
    assert str(ArchitectRequest.objects.get().patch_id) == outcome["patch_id"]
    again = tasks.architect_propose(queued["task_id"])  # a duplicate delivery proposes nothing more
    assert again["status"] == "skipped" and len(prompts) == 1 and ConfigPatch.objects.count() == 1


def test_a_goal_too_long_or_with_nul_bytes(admin, routing_default, monkeypatch):
    monkeypatch.setattr(tasks.architect_propose, "apply_async", lambda *args, **kwargs: None)
    with pytest.raises(Invalid):
        services.architect_request(actor=admin, artifact_id=routing_default.pk, goal="x" * 5000)
    services.architect_request(actor=admin, artifact_id=routing_default.pk, goal=" Fewer\x00 skills. ")
    assert ArchitectRequest.objects.get().goal == "Fewer skills."


def test_the_nightly_run_is_on_the_beat_schedule():
    from liminal.celery import app

    entry = app.conf.beat_schedule["configops-architect-nightly"]
    assert entry["task"] == "apps.configops.tasks.architect_nightly"
    route = app.amqp.router.route({}, "apps.configops.tasks.architect_propose", (), {})
    assert route["queue"].name == "inference"


@pytest.mark.slow
def test_the_real_model_writes_a_proposal_that_is_recorded_either_way(routing_default):
    patch = architect.propose(artifact=routing_default, generate=architect.engine_generate)
    assert patch.model_output
    assert patch.status in ("pending", "failed")
    if patch.status == "failed":
        assert patch.failure_reason
    else:
        assert patch.ops and patch.dry_run["valid"]
    routing_default.refresh_from_db()
    assert routing_default.current_version.created_by != "llm"
