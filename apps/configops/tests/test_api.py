"""ConfigOps over /v1/config: a threshold patch to the seeded routing.default changes the next
routing decision on the real MiniLM encoder and rolling back restores it; test, move and copy
operations; failures named by JSON pointer; stale bases; who may do what; input errors."""

import pytest

from apps.artifacts import services as artifact_services
from apps.artifacts.models import Artifact
from apps.configops import services
from apps.configops.models import ConfigPatch
from apps.configops.tests.conftest import SKILL_RULE, STRICT
from apps.router.services import routing_decide
from apps.training.services import embed

pytestmark = pytest.mark.django_db

PATCH_KEYS = {
    "id",
    "artifact_id",
    "proposer",
    "justification",
    "status",
    "patch",
    "created_at",
    "decided_at",
    "applied_at",
    "meta",
}
BREAD = "How long should I knead bread dough?"
DROP = object()


def data_of(response, status=200):
    assert response.status_code == status, response.content
    body = response.json()
    assert body["status"] == "ok", body
    return body["data"]


def error_of(response, status, code):
    assert response.status_code == status, response.content
    body = response.json()
    assert body["status"] == "error" and body["error"]["code"] == code, body
    return body["error"]


def gates(user, text):
    return [
        gate["name"]
        for gate in routing_decide(actor=user, message=text, has_context=False, embed=embed)["adapter_gates"]
    ]


def propose(client, artifact, patch, justification="Only near-identical questions should use a skill.", status=201):
    response = client.post(
        "/v1/config/propose_patch",
        {"artifact_id": str(artifact.pk), "patch": patch, "justification": justification},
        format="json",
    )
    return data_of(response, status)


def test_a_threshold_patch_approved_and_applied_changes_the_next_decision_and_rollback_restores_it(
    api, admin, user, make_user, routing_default, skills, say
):
    baking, _ = skills
    client = api(admin)
    asked = say(user, BREAD)
    off_topic = say(make_user(), "Who wrote the novel Pride and Prejudice?")
    assert gates(user, BREAD) == [f"skill-{baking.pk}"]
    base = routing_default.version_number

    proposed = propose(
        client,
        routing_default,
        [
            {"op": "test", "path": f"{SKILL_RULE}/id", "value": "nearest_skill"},
            {"op": "replace", "path": f"{SKILL_RULE}/when", "value": STRICT},
        ],
    )
    assert set(proposed) == PATCH_KEYS
    assert proposed["status"] == "pending" and proposed["proposer"] == "human_admin"
    assert proposed["artifact_id"] == str(routing_default.pk) and proposed["meta"]["base_version"] == base
    report = proposed["meta"]["dry_run"]
    assert report["valid"] and report["replay"] == "routing"
    assert str(asked.pk) in report["affected_message_ids"]
    assert str(off_topic.pk) not in report["affected_message_ids"]  # no skill before or after
    change = next(c for c in report["changes"] if c["message_id"] == str(asked.pk))
    assert [g["name"] for g in change["before"]] == [f"skill-{baking.pk}"] and change["after"] == []
    assert gates(user, BREAD) == [f"skill-{baking.pk}"]  # proposing changes nothing

    patch_url = f"/v1/config/patches/{proposed['id']}"
    approved = data_of(client.post(f"{patch_url}/decide", {"decision": "approve", "reason": "ok"}, format="json"))
    assert approved["status"] == "approved" and approved["decided_at"]
    assert approved["meta"]["decided_by"] == str(admin.pk)
    applied = data_of(client.post(f"{patch_url}/apply", {}, format="json"))
    assert applied["status"] == "applied" and applied["applied_at"]
    assert applied["meta"]["applied_version"] == base + 1
    assert str(asked.pk) in applied["meta"]["dry_run"]["at_apply"]["affected_message_ids"]

    routing_default.refresh_from_db()
    version = routing_default.current_version
    assert version.version == base + 1 and version.body["rules"][1]["when"] == STRICT
    assert version.created_by == "user" and version.author == admin
    assert version.change_note == "Only near-identical questions should use a skill."
    assert gates(user, BREAD) == []

    rolled = data_of(client.post(f"{patch_url}/rollback", {}, format="json"))
    assert rolled["status"] == "applied" and rolled["meta"]["rollback_version"] == base + 2
    routing_default.refresh_from_db()
    assert routing_default.body == routing_default.versions.get(version=base).body
    assert gates(user, BREAD) == [f"skill-{baking.pk}"]
    assert data_of(client.get(patch_url))["meta"]["rolled_back_at"]


def test_the_patch_shapes_a_single_op_and_an_ops_object_are_accepted(api, admin, routing_default):
    client = api(admin)
    one = propose(client, routing_default, {"op": "replace", "path": "/weight_floor", "value": 0.1})
    assert one["patch"] == [{"op": "replace", "path": "/weight_floor", "value": 0.1}]
    wrapped = propose(client, routing_default, {"ops": [{"op": "remove", "path": "/description"}]})
    assert wrapped["patch"] == [{"op": "remove", "path": "/description"}]
    listed = data_of(client.get("/v1/config/patches?status=pending"))["items"]
    assert {item["id"] for item in listed} >= {one["id"], wrapped["id"]}
    assert data_of(client.get("/v1/config/patches?status=applied"))["items"] == []


def test_a_failing_test_op_rejects_the_whole_patch(api, admin, routing_default):
    client = api(admin)
    before = routing_default.current_version_id
    proposed = propose(
        client,
        routing_default,
        [
            {"op": "replace", "path": "/weight_floor", "value": 0.2},
            {"op": "test", "path": f"{SKILL_RULE}/id", "value": "not_this_rule"},
        ],
    )
    assert proposed["status"] == "failed"
    assert "test operation at /patch/1 failed" in proposed["meta"]["failure_reason"]
    assert proposed["meta"]["dry_run"]["valid"] is False
    error_of(
        client.post(f"/v1/config/patches/{proposed['id']}/decide", {"decision": "approve"}, format="json"),
        409,
        "conflict",
    )
    error_of(client.post("/v1/config/apply", {"patch_id": proposed["id"]}, format="json"), 409, "conflict")
    routing_default.refresh_from_db()
    assert routing_default.current_version_id == before and routing_default.body["weight_floor"] == 0.05


def test_move_and_copy_apply(api, admin, new_mirror_files):
    client = api(admin)
    policy = artifact_services.artifact_create(
        actor=admin,
        name="experiments",
        body={
            "kind": "policy.routing",
            "rules": [
                {
                    "id": "first",
                    "when": "true",
                    "action": {"type": "activate_adapter_by_type", "adapter_type": "persona"},
                },
                {"id": "second", "when": "has_context", "action": {"type": "deactivate_all_adapters"}},
            ],
        },
    )
    proposed = propose(
        client,
        policy,
        [
            {"op": "copy", "from": "/rules/0", "path": "/rules/-"},
            {"op": "replace", "path": "/rules/2/id", "value": "third"},
            {"op": "move", "from": "/rules/0", "path": "/rules/1"},
            {"op": "copy", "from": "/rules/0/when", "path": "/description"},
        ],
        justification="Reorder.",
    )
    assert proposed["status"] == "pending", proposed["meta"]["failure_reason"]
    assert proposed["meta"]["dry_run"]["replay"] is None  # the router never reads a policy of this name
    data_of(client.post(f"/v1/config/patches/{proposed['id']}/decide", {"decision": "approve"}, format="json"))
    data_of(client.post("/v1/config/apply", {"patch_id": proposed["id"]}, format="json"))
    policy.refresh_from_db()
    assert [rule["id"] for rule in policy.body["rules"]] == ["second", "first", "third"]
    assert policy.body["description"] == "has_context" and policy.version_number == 2


@pytest.mark.parametrize(
    ("op", "pointer"),
    [
        ({"op": "replace", "path": "/max_active_adapters", "value": "three"}, "/max_active_adapters"),
        ({"op": "replace", "path": f"{SKILL_RULE}/when", "value": "adapter_similarity >="}, f"{SKILL_RULE}/when"),
        ({"op": "add", "path": "/rules/0/colour", "value": "red"}, "/rules/0"),
    ],
)
def test_a_patch_making_an_invalid_artifact_fails_naming_the_json_pointer(api, admin, routing_default, op, pointer):
    proposed = propose(api(admin), routing_default, [op])
    assert proposed["status"] == "failed"
    assert f"JSON pointer {pointer})" in proposed["meta"]["failure_reason"]
    assert proposed["meta"]["dry_run"]["error"]["details"]["body_pointer"] == pointer
    assert routing_default.versions.count() == routing_default.version_number


def test_a_path_that_does_not_exist_fails_naming_the_operation(api, admin, routing_default):
    proposed = propose(api(admin), routing_default, [{"op": "remove", "path": "/rules/7"}])
    assert proposed["status"] == "failed" and "(JSON pointer /patch/0)" in proposed["meta"]["failure_reason"]


def test_applying_on_a_stale_base_version_is_a_conflict(api, admin, routing_default):
    client = api(admin)
    proposed = propose(client, routing_default, [{"op": "replace", "path": "/weight_floor", "value": 0.1}])
    data_of(client.post(f"/v1/config/patches/{proposed['id']}/decide", {"decision": "approve"}, format="json"))
    artifact_services.artifact_patch(
        actor=admin, artifact=routing_default, patch=[{"op": "replace", "path": "/max_active_adapters", "value": 2}]
    )
    error = error_of(client.post(f"/v1/config/patches/{proposed['id']}/apply", {}, format="json"), 409, "conflict")
    base = proposed["meta"]["base_version"]
    assert error["details"] == {"base_version": base, "current_version": base + 1}
    patch = ConfigPatch.objects.get(pk=proposed["id"])
    assert patch.status == "failed" and "version" in patch.failure_reason
    routing_default.refresh_from_db()
    assert routing_default.body["weight_floor"] == 0.05 and routing_default.body["max_active_adapters"] == 2


def test_only_a_pending_patch_is_decided_and_only_an_approved_one_applied(api, admin, routing_default):
    client = api(admin)
    proposed = propose(client, routing_default, [{"op": "replace", "path": "/weight_floor", "value": 0.1}])
    url = f"/v1/config/patches/{proposed['id']}"
    error_of(client.post(f"{url}/apply", {}, format="json"), 409, "conflict")
    error_of(client.post(f"{url}/rollback", {}, format="json"), 409, "conflict")
    rejected = data_of(client.post(f"{url}/decide", {"decision": "reject", "reason": "no"}, format="json"))
    assert rejected["status"] == "rejected" and rejected["meta"]["decision_reason"] == "no"
    error_of(client.post(f"{url}/decide", {"decision": "approve"}, format="json"), 409, "conflict")
    error_of(client.post(f"{url}/apply", {}, format="json"), 409, "conflict")
    routing_default.refresh_from_db()
    assert routing_default.body["weight_floor"] == 0.05


def test_someone_who_is_not_an_admin_is_refused_and_sees_nothing(api, admin, user, make_user, routing_default, say):
    say(user, BREAD)
    proposed = propose(api(admin), routing_default, [{"op": "replace", "path": "/weight_floor", "value": 0.1}])
    client = api(user)
    body = {"artifact_id": str(routing_default.pk), "patch": [], "justification": ""}
    for method, url, data in [
        ("post", "/v1/config/propose_patch", body),
        ("post", "/v1/config/patches", body),
        ("get", "/v1/config/patches", None),
        ("get", f"/v1/config/patches/{proposed['id']}", None),
        ("post", f"/v1/config/patches/{proposed['id']}/decide", {"decision": "approve"}),
        ("post", f"/v1/config/patches/{proposed['id']}/apply", {}),
        ("post", f"/v1/config/patches/{proposed['id']}/rollback", {}),
        ("post", "/v1/config/apply", {"patch_id": proposed["id"]}),
        ("post", "/v1/config/auto_patch", {"artifact_id": str(routing_default.pk)}),
    ]:
        response = getattr(client, method)(url, data, format="json")
        error = error_of(response, 403, "forbidden")
        assert "dry_run" not in str(error) and proposed["id"] not in response.content.decode()
    assert ConfigPatch.objects.get(pk=proposed["id"]).status == "pending"


def test_a_patch_on_an_artifact_the_admin_cannot_see_is_not_found(api, admin, user, new_mirror_files):
    private = artifact_services.artifact_create(
        actor=user, name="routing", body={"kind": "policy.routing", "rules": []}
    )
    patch = services.patch_propose(
        actor=None, artifact=private, ops=[{"op": "add", "path": "/weight_floor", "value": 0.1}], justification="x"
    )
    client = api(admin)
    error_of(client.get(f"/v1/config/patches/{patch.pk}"), 404, "not_found")
    assert data_of(client.get("/v1/config/patches"))["items"] == []
    error_of(
        client.post(
            "/v1/config/patches",
            {"artifact_id": str(private.pk), "patch": [{"op": "remove", "path": "/rules"}], "justification": "x"},
            format="json",
        ),
        404,
        "not_found",
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (
            {"artifact_id": DROP, "patch": [{"op": "remove", "path": "/description"}], "justification": "w"},
            "artifact_id",
        ),
        (
            {"artifact_id": "not-a-uuid", "patch": [{"op": "remove", "path": "/description"}], "justification": "w"},
            "artifact_id",
        ),
        ({"patch": [{"op": "remove", "path": "/description"}], "justification": ""}, "justification"),
        ({"patch": [{"op": "remove", "path": "/description"}], "justification": "x" * 2001}, "justification"),
        ({"patch": [{"op": "remove", "path": "/description"}]}, "justification"),
        ({"patch": [], "justification": "why"}, "patch"),
        ({"patch": "remove it", "justification": "why"}, "patch"),
        ({"patch": [{"op": "frobnicate", "path": "/x"}], "justification": "why"}, "patch"),
        ({"patch": [{"op": "replace", "path": "/x"}], "justification": "why"}, "patch"),
        ({"patch": [{"op": "move", "path": "/x"}], "justification": "why"}, "patch"),
        ({"patch": [{"op": "remove", "path": "no-slash"}], "justification": "why"}, "patch"),
        ({"patch": [{"op": "remove", "path": "/description"}] * 101, "justification": "why"}, "patch"),
        ({"justification": "why"}, "patch"),
    ],
)
def test_bad_input_is_a_400_in_the_envelope_naming_the_field(api, admin, routing_default, body, field):
    body = {key: value for key, value in {"artifact_id": str(routing_default.pk), **body}.items() if value is not DROP}
    error = error_of(api(admin).post("/v1/config/propose_patch", body, format="json"), 400, "validation_error")
    assert field in error["details"] and error["message"].startswith(f"{field}:")
    assert not ConfigPatch.objects.exists()


def test_bad_decisions_and_list_filters_are_400s(api, admin, routing_default):
    client = api(admin)
    proposed = propose(client, routing_default, [{"op": "replace", "path": "/weight_floor", "value": 0.1}])
    error = error_of(
        client.post(f"/v1/config/patches/{proposed['id']}/decide", {"decision": "maybe"}, format="json"),
        400,
        "validation_error",
    )
    assert "decision" in error["details"]
    error = error_of(client.get("/v1/config/patches?status=bogus"), 400, "validation_error")
    assert "status" in error["details"]
    error = error_of(client.post("/v1/config/apply", {"patch_id": "nope"}, format="json"), 400, "validation_error")
    assert "patch_id" in error["details"]
    error_of(client.get("/v1/config/patches/00000000-0000-0000-0000-000000000000"), 404, "not_found")


def test_writes_are_rate_limited_per_user(api, admin, make_user, routing_default, settings):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "configops_user": (2, 3600)}
    client = api(admin)
    op = [{"op": "replace", "path": "/weight_floor", "value": 0.1}]
    propose(client, routing_default, op)
    propose(client, routing_default, op)
    response = client.post(
        "/v1/config/patches", {"artifact_id": str(routing_default.pk), "patch": op, "justification": "x"}, format="json"
    )
    error_of(response, 429, "rate_limited")
    assert int(response["Retry-After"]) >= 1
    propose(api(make_user(role="admin")), routing_default, op)  # per user
    assert data_of(client.get("/v1/config/patches"))["items"]  # reads are not counted


def test_a_patch_proposed_by_the_model_is_applied_as_the_models_version(api, admin, routing_default):
    patch = services.patch_propose(
        actor=None,
        artifact=routing_default,
        ops=[{"op": "replace", "path": "/weight_floor", "value": 0.1}],
        justification="The floor drops near-useless adapters.",
    )
    assert patch.proposer == "system_llm" and patch.status == "pending" and patch.proposed_by is None
    client = api(admin)
    data_of(client.post(f"/v1/config/patches/{patch.pk}/decide", {"decision": "approve"}, format="json"))
    applied = data_of(client.post(f"/v1/config/patches/{patch.pk}/apply", {}, format="json"))
    assert applied["proposer"] == "system_llm"
    routing_default.refresh_from_db()
    assert routing_default.current_version.created_by == "llm"
    assert routing_default.current_version.change_note == "The floor drops near-useless adapters."
    assert Artifact.objects.get(pk=routing_default.pk).body["weight_floor"] == 0.1


def test_rollback_can_restore_any_earlier_version(api, admin, routing_default):
    client = api(admin)
    base = routing_default.version_number
    ids = []
    for floor in (0.1, 0.2):
        proposed = propose(client, routing_default, [{"op": "replace", "path": "/weight_floor", "value": floor}])
        data_of(client.post(f"/v1/config/patches/{proposed['id']}/decide", {"decision": "approve"}, format="json"))
        data_of(client.post(f"/v1/config/patches/{proposed['id']}/apply", {}, format="json"))
        ids.append(proposed["id"])
    routing_default.refresh_from_db()
    assert routing_default.body["weight_floor"] == 0.2
    data_of(client.post(f"/v1/config/patches/{ids[1]}/rollback", {"version": base}, format="json"))
    routing_default.refresh_from_db()
    assert routing_default.body["weight_floor"] == 0.05 and routing_default.version_number == base + 3
    error_of(client.post(f"/v1/config/patches/{ids[1]}/rollback", {"version": 999}, format="json"), 404, "not_found")


def test_a_patch_that_became_invalid_before_apply_ends_failed_naming_the_pointer(api, admin, new_mirror_files):
    client = api(admin)
    policy = artifact_services.artifact_create(
        actor=admin, name="experiments", body={"kind": "policy.routing", "rules": []}
    )
    adapter = artifact_services.artifact_create(
        actor=admin,
        name="baking",
        body={"kind": "adapter.lora", "scope": "skill", "base_model": "smollm2", "rank": 8, "current_version": None},
    )
    rule = {"id": "bake", "when": "true", "action": {"type": "activate_adapter_by_id", "adapter_id": str(adapter.pk)}}
    proposed = propose(client, policy, [{"op": "add", "path": "/rules/-", "value": rule}], justification="Bake.")
    data_of(client.post(f"/v1/config/patches/{proposed['id']}/decide", {"decision": "approve"}, format="json"))
    artifact_services.artifact_delete(actor=admin, artifact=adapter)
    error = error_of(
        client.post(f"/v1/config/patches/{proposed['id']}/apply", {}, format="json"), 400, "validation_error"
    )
    assert error["details"]["body_pointer"] == "/rules/0/action/adapter_id"
    failed = data_of(client.get(f"/v1/config/patches/{proposed['id']}"))
    assert (
        failed["status"] == "failed" and "(JSON pointer /rules/0/action/adapter_id)" in failed["meta"]["failure_reason"]
    )
    assert failed["meta"]["dry_run"]["at_apply"]["valid"] is False
    policy.refresh_from_db()
    assert policy.body["rules"] == [] and policy.version_number == 1
