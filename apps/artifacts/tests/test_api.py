import json

import pytest
from rest_framework.test import APIClient

from apps.artifacts import seeds, services
from apps.artifacts.models import Artifact, ArtifactVersion

pytestmark = pytest.mark.django_db

ITEM_KEYS = {
    "id",
    "type",
    "kind",
    "name",
    "description",
    "owner_user_id",
    "visibility",
    "version",
    "created_at",
    "updated_at",
    "schema",
}
PAGE_KEYS = {"items", "total_count", "has_next", "next_page", "page_size"}
VERSION_KEYS = {
    "id",
    "artifact_id",
    "version",
    "created_by",
    "change_note",
    "created_at",
    "schema",
    "author_user_id",
    "parent_version",
    "fs_path",
}


def data_of(response, status=200):
    assert response.status_code == status, response.content
    body = response.json()
    assert body["status"] == "ok" and body["request_id"]
    return body["data"]


def error_of(response, status, code):
    assert response.status_code == status, response.content
    body = response.json()
    assert body["status"] == "error" and body["error"]["code"] == code, body
    return body["error"]


def tool_body(name="acme.weather_v1"):
    return {"kind": "tool.spec", "name": name, "handler": "llm.generic_chat", "timeout_ms": 5000}


def test_create_then_read_one_artifact(client_for, user, workflow_body):
    api = client_for(user)
    created = data_of(
        api.post(
            "/v1/artifacts",
            {"type": "workflow", "name": "  My   flow ", "description": "Mine.", "schema": workflow_body},
            format="json",
        ),
        201,
    )
    assert set(created) == ITEM_KEYS
    assert created["type"] == "workflow" and created["kind"] == "workflow.chat"
    assert created["name"] == "My flow" and created["description"] == "Mine."
    assert created["owner_user_id"] == str(user.pk) and created["visibility"] == "private"
    assert created["version"] == 1 and created["schema"] == workflow_body

    assert data_of(api.get(f"/v1/artifacts/{created['id']}")) == created
    version = ArtifactVersion.objects.get(artifact_id=created["id"])
    assert version.created_by == "user" and version.author == user


def test_type_may_be_the_family_or_the_kind_but_must_match_the_body(client_for, user, workflow_body):
    api = client_for(user)
    as_kind = api.post("/v1/artifacts", {"type": "workflow.chat", "name": "a", "schema": workflow_body}, format="json")
    assert data_of(as_kind, 201)["type"] == "workflow"
    mismatch = api.post("/v1/artifacts", {"type": "policy", "name": "b", "schema": workflow_body}, format="json")
    assert error_of(mismatch, 400, "validation_error")["details"]["type"]
    duplicate = api.post("/v1/artifacts", {"name": "a", "schema": workflow_body}, format="json")
    error_of(duplicate, 409, "conflict")


def test_list_shape_filters_and_search(client_for, user, workflow_body):
    api = client_for(user)
    services.artifact_create(actor=user, name="Research flow", description="For papers", body=workflow_body)
    services.artifact_create(actor=user, name="acme.weather_v1", body=tool_body())
    shared = services.artifact_create(actor=user, name="Team flow", body=workflow_body, visibility="shared")

    listed = data_of(api.get("/v1/artifacts"))
    assert set(listed) == PAGE_KEYS
    names = [item["name"] for item in listed["items"]]
    assert {"Research flow", "acme.weather_v1", "Team flow", *seeds.seeded_names()} <= set(names)
    assert listed["total_count"] == len(names) and listed["has_next"] is False and listed["next_page"] is None
    assert listed["page_size"] == 100
    assert all(set(item) == ITEM_KEYS for item in listed["items"])
    default = next(item for item in listed["items"] if item["name"] == seeds.DEFAULT_WORKFLOW)
    assert default["owner_user_id"] is None and default["visibility"] == "global"
    assert default["schema"]["kind"] == "workflow.chat" and default["version"] >= 1

    def names_for(**params):
        return sorted(item["name"] for item in data_of(api.get("/v1/artifacts", params))["items"])

    workflows = sorted(["Research flow", "Team flow", seeds.DEFAULT_WORKFLOW])
    assert names_for(type="workflow") == workflows
    assert names_for(type="workflow.chat") == workflows
    assert names_for(kind="workflow.chat") == workflows
    assert names_for(kind="tool.spec") == sorted(["acme.weather_v1", *(tool["name"] for tool in seeds.TOOLS)])
    assert names_for(visibility="shared") == ["Team flow"]
    assert names_for(visibility="private") == ["Research flow", "acme.weather_v1"]
    assert names_for(q="PAPERS") == ["Research flow"]
    assert names_for(type="workflow", visibility="global") == [seeds.DEFAULT_WORKFLOW]
    assert names_for(kind="policy.routing") == [seeds.DEFAULT_ROUTING_POLICY]
    assert str(shared.pk) in {item["id"] for item in data_of(api.get("/v1/workflows"))["items"]}


def test_pagination(client_for, user, workflow_body):
    api = client_for(user)
    for index in range(5):
        services.artifact_create(actor=user, name=f"flow {index}", body=workflow_body)

    first = data_of(api.get("/v1/artifacts", {"visibility": "private", "page_size": 2}))
    assert [item["name"] for item in first["items"]] == ["flow 0", "flow 1"]
    assert (first["total_count"], first["has_next"], first["next_page"], first["page_size"]) == (5, True, 2, 2)
    last = data_of(api.get("/v1/artifacts", {"visibility": "private", "page_size": 2, "page": 3}))
    assert [item["name"] for item in last["items"]] == ["flow 4"]
    assert (last["has_next"], last["next_page"]) == (False, None)
    beyond = data_of(api.get("/v1/artifacts", {"visibility": "private", "page_size": 2, "page": 9}))
    assert beyond["items"] == [] and beyond["total_count"] == 5 and beyond["has_next"] is False
    assert data_of(api.get("/v1/artifacts", {"page_size": 500}))["page_size"] == 500


@pytest.mark.parametrize(
    "params, field",
    [
        ({"page": 0}, "page"),
        ({"page": "two"}, "page"),
        ({"page_size": 0}, "page_size"),
        ({"page_size": 501}, "page_size"),
        ({"page_size": "lots"}, "page_size"),
    ],
)
@pytest.mark.parametrize("url", ["/v1/artifacts", "/v1/tools/specs", "/v1/workflows"])
def test_bad_paging_is_a_validation_error_naming_the_field(client_for, user, url, params, field):
    error = error_of(client_for(user).get(url, params), 400, "validation_error")
    assert field in error["details"] and error["message"].startswith(f"{field}:")


@pytest.mark.parametrize(
    "body, pointer",
    [
        ({"kind": "workflow.chat", "nodes": [{"id": "a", "type": "teleport"}]}, "/schema/nodes/0/type"),
        (
            {
                "kind": "workflow.chat",
                "nodes": [
                    {"id": "route", "type": "switch", "branches": [{"when": "true", "next": "end"}]},
                    {"id": "pick", "type": "switch", "branches": [{"when": "true", "next": "nowhere"}]},
                    {"id": "end", "type": "end"},
                ],
            },
            "/schema/nodes/1/branches/0/next",
        ),
        (
            {
                "kind": "workflow.chat",
                "nodes": [{"id": "call", "type": "tool_call", "tool": "no.such_tool_v1"}, {"id": "end", "type": "end"}],
            },
            "/schema/nodes/0/tool",
        ),
        ({"kind": "workflow.chat", "nodes": [{"id": "a", "type": "end"}], "entrypoint": "b"}, "/schema/entrypoint"),
        ({"kind": "tool.spec", "name": "acme.x_v1", "handler": "no.such_handler"}, "/schema/handler"),
        ({"kind": "gadget"}, "/schema/kind"),
        ("not an object", "/schema"),
        (
            {"kind": "workflow.chat", "nodes": [{"id": "a", "type": "end"}], "defaults": {"system_prompt": "a\x00b"}},
            "/schema/defaults/system_prompt",
        ),
        (
            {"kind": "workflow.chat", "nodes": [{"id": "a", "type": "end"}], "defaults": {"title_prompt": "Name it."}},
            "/schema/defaults/title_prompt",
        ),
    ],
)
def test_an_invalid_body_is_refused_with_a_json_pointer(client_for, user, body, pointer):
    response = client_for(user).post("/v1/artifacts", {"name": "broken", "schema": body}, format="json")
    error = error_of(response, 400, "validation_error")
    assert error["details"]["pointer"] == pointer
    assert error["message"].startswith("schema:")
    assert not Artifact.objects.filter(name="broken").exists()


def test_a_tool_call_may_name_the_users_own_tool(client_for, user, other_user, workflow_body):
    services.artifact_create(actor=user, name="acme.weather_v1", body=tool_body())
    workflow_body["nodes"][0]["tool"] = "acme.weather_v1"
    created = client_for(user).post("/v1/artifacts", {"name": "weather", "schema": workflow_body}, format="json")
    assert data_of(created, 201)["schema"]["nodes"][0]["tool"] == "acme.weather_v1"
    theirs = client_for(other_user).post("/v1/artifacts", {"name": "weather", "schema": workflow_body}, format="json")
    assert error_of(theirs, 400, "validation_error")["details"]["pointer"] == "/schema/nodes/0/tool"


def test_every_patch_operation_makes_a_new_version(client_for, user, workflow_body):
    api = client_for(user)
    artifact = services.artifact_create(actor=user, name="flow", body=workflow_body)
    url = f"/v1/artifacts/{artifact.pk}"

    def patch(*ops, note=""):
        return data_of(api.patch(url, {"patch": list(ops), "change_note": note}, format="json"))

    added = patch({"op": "add", "path": "/defaults", "value": {"system_prompt": "Be brief."}}, note="Terse.")
    assert added["version"] == 2 and added["schema"]["defaults"] == {"system_prompt": "Be brief."}

    replaced = patch({"op": "replace", "path": "/defaults/system_prompt", "value": "Be kind."})
    assert replaced["version"] == 3 and replaced["schema"]["defaults"]["system_prompt"] == "Be kind."

    copied = patch({"op": "copy", "from": "/nodes/0/next", "path": "/nodes/0/on_error"})
    assert copied["version"] == 4 and copied["schema"]["nodes"][0]["on_error"] == "end"

    moved = patch({"op": "move", "from": "/nodes/1", "path": "/nodes/0"})
    assert moved["version"] == 5 and [node["id"] for node in moved["schema"]["nodes"]] == ["end", "answer"]

    tested = patch(
        {"op": "test", "path": "/entrypoint", "value": "answer"},
        {"op": "replace", "path": "/nodes/1/inputs/message", "value": "Q: ${input.message}"},
    )
    assert tested["version"] == 6 and tested["schema"]["nodes"][1]["inputs"]["message"] == "Q: ${input.message}"

    removed = patch({"op": "remove", "path": "/defaults"})
    assert removed["version"] == 7 and "defaults" not in removed["schema"]

    versions = list(artifact.versions.order_by("version"))
    assert [version.version for version in versions] == [1, 2, 3, 4, 5, 6, 7]
    assert [version.parent.version if version.parent else None for version in versions] == [None, 1, 2, 3, 4, 5, 6]
    assert versions[1].change_note == "Terse." and versions[2].change_note == "Patched."
    assert versions[0].body == workflow_body and versions[6].body == removed["schema"]


def test_a_failing_test_operation_rejects_the_whole_patch(client_for, user, workflow_body):
    api = client_for(user)
    artifact = services.artifact_create(actor=user, name="flow", body=workflow_body)
    response = api.patch(
        f"/v1/artifacts/{artifact.pk}",
        {
            "patch": [
                {"op": "replace", "path": "/nodes/0/inputs/message", "value": "changed"},
                {"op": "test", "path": "/entrypoint", "value": "somewhere else"},
            ]
        },
        format="json",
    )
    error_of(response, 409, "conflict")
    assert artifact.versions.count() == 1
    assert data_of(api.get(f"/v1/artifacts/{artifact.pk}"))["schema"] == workflow_body


@pytest.mark.parametrize(
    "payload, pointer",
    [
        ({"patch": [{"op": "replace", "path": "/nodes/0/type", "value": "teleport"}]}, "/schema/nodes/0/type"),
        ({"patch": [{"op": "remove", "path": "/nodes/1"}]}, "/schema/nodes/0/next"),
        ({"patch": [{"op": "jump", "path": "/nodes"}]}, "/patch/0/op"),
        ({"patch": [{"op": "remove", "path": "/no/such/place"}]}, None),
        ({"schema": {"kind": "tool.spec", "name": "a.b", "handler": "llm.generic_chat"}}, "/schema/kind"),
    ],
)
def test_a_change_that_breaks_the_body_is_refused(client_for, user, workflow_body, payload, pointer):
    artifact = services.artifact_create(actor=user, name="flow", body=workflow_body)
    error = error_of(
        client_for(user).patch(f"/v1/artifacts/{artifact.pk}", payload, format="json"), 400, "validation_error"
    )
    assert (error["details"] or {}).get("pointer") == pointer
    assert artifact.versions.count() == 1


def test_replacing_the_body_and_description(client_for, user, workflow_body):
    api = client_for(user)
    artifact = services.artifact_create(actor=user, name="flow", description="Old.", body=workflow_body)
    url = f"/v1/artifacts/{artifact.pk}"
    new_body = {**workflow_body, "timeout_ms": 30000}

    both = data_of(api.patch(url, {"schema": new_body, "description": "New.", "change_note": "Faster."}, format="json"))
    assert (both["version"], both["schema"], both["description"]) == (2, new_body, "New.")

    described = data_of(api.patch(url, {"description": "Newer."}, format="json"))
    assert (described["version"], described["schema"], described["description"]) == (3, new_body, "Newer.")

    body_only = data_of(api.patch(url, {"schema": workflow_body}, format="json"))
    assert (body_only["version"], body_only["schema"], body_only["description"]) == (4, workflow_body, "Newer.")
    assert artifact.versions.get(version=2).change_note == "Faster."


def test_revert_and_the_versions_list(client_for, user, workflow_body):
    api = client_for(user)
    artifact = services.artifact_create(actor=user, name="flow", body=workflow_body)
    url = f"/v1/artifacts/{artifact.pk}"
    data_of(api.patch(url, {"patch": [{"op": "add", "path": "/timeout_ms", "value": 9000}]}, format="json"))

    reverted = data_of(api.patch(url, {"revert_to": 1, "change_note": "Back."}, format="json"))
    assert reverted["version"] == 3 and reverted["schema"] == workflow_body
    error_of(api.patch(url, {"revert_to": 42}, format="json"), 404, "not_found")

    items = data_of(api.get(f"{url}/versions"))["items"]
    assert [item["version"] for item in items] == [3, 2, 1]
    assert all(set(item) == VERSION_KEYS for item in items)
    newest, middle, oldest = items
    assert newest["change_note"] == "Back." and newest["parent_version"] == 2 and newest["schema"] == workflow_body
    assert middle["schema"]["timeout_ms"] == 9000 and middle["parent_version"] == 1
    assert oldest["parent_version"] is None and oldest["created_by"] == "user"
    assert {item["artifact_id"] for item in items} == {str(artifact.pk)}
    assert {item["author_user_id"] for item in items} == {str(user.pk)}
    assert newest["fs_path"] == str(services.version_path(artifact.pk, 3))
    assert newest["fs_path"].endswith(f"/artifacts/{artifact.pk}/v0003.json")


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"change_note": "nothing else"},
        {"patch": []},
        {"patch": "replace everything"},
        {"patch": [{"op": "add", "path": "/timeout_ms", "value": 9000}], "schema": {"kind": "workflow.chat"}},
        {"patch": [{"op": "add", "path": "/timeout_ms", "value": 9000}], "description": "also"},
        {"revert_to": 1, "description": "also"},
        {"revert_to": 0},
        {"revert_to": "first"},
        {"schema": None},
        {"description": ["not", "text"]},
        {"description": "x" * 4001},
        {"description": "nul\x00"},
    ],
)
def test_malformed_changes_are_validation_errors(client_for, user, workflow_body, payload):
    artifact = services.artifact_create(actor=user, name="flow", body=workflow_body)
    error_of(client_for(user).patch(f"/v1/artifacts/{artifact.pk}", payload, format="json"), 400, "validation_error")
    assert artifact.versions.count() == 1


def test_the_version_file_is_mirrored_on_commit(
    client_for, user, workflow_body, mirror_dir, django_capture_on_commit_callbacks
):
    api = client_for(user)
    with django_capture_on_commit_callbacks(execute=True):
        created = data_of(api.post("/v1/artifacts", {"name": "flow", "schema": workflow_body}, format="json"), 201)
    directory = mirror_dir(created["id"])
    first = directory / "v0001.json"
    record = json.loads(first.read_text())
    assert record["artifact_id"] == created["id"] and record["version"] == 1
    assert record["body"] == workflow_body and record["parent_version"] is None

    with django_capture_on_commit_callbacks(execute=True):
        data_of(api.patch(f"/v1/artifacts/{created['id']}", {"description": "More."}, format="json"))
    versions = data_of(api.get(f"/v1/artifacts/{created['id']}/versions"))["items"]
    assert versions[0]["fs_path"] == str(directory / "v0002.json")
    assert json.loads((directory / "v0002.json").read_text())["parent_version"] == 1


def test_delete(client_for, user, workflow_body):
    api = client_for(user)
    artifact = services.artifact_create(actor=user, name="flow", body=workflow_body)
    deleted = data_of(api.delete(f"/v1/artifacts/{artifact.pk}"))
    assert deleted == {"deleted": True, "id": str(artifact.pk)}
    assert not Artifact.objects.filter(pk=artifact.pk).exists()
    assert not ArtifactVersion.objects.filter(artifact_id=artifact.pk).exists()
    error_of(api.get(f"/v1/artifacts/{artifact.pk}"), 404, "not_found")
    error_of(api.delete(f"/v1/artifacts/{artifact.pk}"), 404, "not_found")


def test_another_users_private_artifact_does_not_exist_for_them(client_for, user, other_user, workflow_body):
    artifact = services.artifact_create(actor=user, name="secret flow", body=workflow_body)
    intruder = client_for(other_user)
    url = f"/v1/artifacts/{artifact.pk}"

    error_of(intruder.get(url), 404, "not_found")
    error_of(intruder.get(f"{url}/versions"), 404, "not_found")
    error_of(intruder.patch(url, {"description": "mine now"}, format="json"), 404, "not_found")
    error_of(intruder.patch(url, {"revert_to": 1}, format="json"), 404, "not_found")
    error_of(intruder.patch(url, {"patch": [{"op": "remove", "path": "/entrypoint"}]}, format="json"), 404, "not_found")
    error_of(intruder.delete(url), 404, "not_found")
    assert str(artifact.pk) not in {item["id"] for item in data_of(intruder.get("/v1/artifacts"))["items"]}
    assert data_of(intruder.get("/v1/artifacts", {"q": "secret"}))["total_count"] == 0
    assert data_of(intruder.get("/v1/workflows", {"q": "secret"}))["total_count"] == 0
    artifact.refresh_from_db()
    assert artifact.versions.count() == 1 and artifact.description == ""


def test_a_shared_artifact_is_readable_in_the_tenant_but_writable_by_its_owner_only(
    client_for, make_user, user, workflow_body
):
    colleague = make_user(tenant=user.tenant)
    stranger = make_user()
    artifact = services.artifact_create(actor=user, name="team flow", body=workflow_body, visibility="shared")
    url = f"/v1/artifacts/{artifact.pk}"

    reader = client_for(colleague)
    assert data_of(reader.get(url))["owner_user_id"] == str(user.pk)
    assert [item["version"] for item in data_of(reader.get(f"{url}/versions"))["items"]] == [1]
    assert str(artifact.pk) in {item["id"] for item in data_of(reader.get("/v1/artifacts"))["items"]}
    error_of(reader.patch(url, {"description": "ours"}, format="json"), 403, "forbidden")
    error_of(reader.patch(url, {"revert_to": 1}, format="json"), 403, "forbidden")
    error_of(reader.delete(url), 403, "forbidden")

    error_of(client_for(stranger).get(url), 404, "not_found")
    error_of(client_for(stranger).delete(url), 404, "not_found")
    assert data_of(client_for(user).patch(url, {"description": "ours"}, format="json"))["version"] == 2


def test_global_artifacts_are_readable_by_all_and_writable_by_admins_only(client_for, user, admin_user):
    default = Artifact.objects.get(owner=None, kind="workflow.chat", name=seeds.DEFAULT_WORKFLOW)
    version = default.version_number
    url = f"/v1/artifacts/{default.pk}"
    api = client_for(user)

    assert data_of(api.get(url))["schema"] == default.body
    assert data_of(api.get(f"{url}/versions"))["items"][0]["created_by"] in {"system", "user"}
    error_of(api.patch(url, {"description": "hijacked"}, format="json"), 403, "forbidden")
    error_of(api.patch(url, {"patch": [{"op": "remove", "path": "/timeout_ms"}]}, format="json"), 403, "forbidden")
    error_of(api.delete(url), 403, "forbidden")
    error_of(
        api.post("/v1/artifacts", {"name": "g", "schema": tool_body(), "visibility": "global"}, format="json"),
        403,
        "forbidden",
    )

    admin = client_for(admin_user)
    changed = data_of(admin.patch(url, {"description": "Tuned.", "change_note": "Admin edit."}, format="json"))
    assert changed["version"] == version + 1 and changed["description"] == "Tuned." and changed["owner_user_id"] is None
    assert data_of(api.get(url))["description"] == "Tuned."

    created = data_of(
        admin.post(
            "/v1/artifacts",
            {"name": "acme.clock_v1", "schema": tool_body("acme.clock_v1"), "visibility": "global"},
            format="json",
        ),
        201,
    )
    assert created["owner_user_id"] is None and created["visibility"] == "global"
    assert data_of(api.get(f"/v1/tools/specs/{created['id']}"))["name"] == "acme.clock_v1"
    assert data_of(admin.delete(f"/v1/artifacts/{created['id']}"))["deleted"] is True


def test_tool_specs_and_workflows(client_for, user, other_user, workflow_body):
    api = client_for(user)
    mine = services.artifact_create(actor=user, name="acme.weather_v1", body=tool_body())
    flow = services.artifact_create(actor=user, name="flow", body=workflow_body)
    services.artifact_create(actor=other_user, name="acme.theirs_v1", body=tool_body("acme.theirs_v1"))

    tools = data_of(api.get("/v1/tools/specs"))
    assert set(tools) == PAGE_KEYS and tools["page_size"] == 100
    names = [item["name"] for item in tools["items"]]
    assert sorted(names) == sorted(["acme.weather_v1", *(tool["name"] for tool in seeds.TOOLS)])
    assert tools["total_count"] == len(names) and {item["kind"] for item in tools["items"]} == {"tool.spec"}
    assert all(set(item) == ITEM_KEYS for item in tools["items"])
    paged = data_of(api.get("/v1/tools/specs", {"page_size": 1, "page": 2}))
    assert len(paged["items"]) == 1 and paged["has_next"] is True and paged["next_page"] == 3
    assert [item["name"] for item in data_of(api.get("/v1/tools/specs", {"q": "weather"}))["items"]] == [
        "acme.weather_v1"
    ]

    spec = data_of(api.get(f"/v1/tools/specs/{mine.pk}"))
    assert spec["schema"]["handler"] == "llm.generic_chat" and spec["kind"] == "tool.spec"
    error_of(api.get(f"/v1/tools/specs/{flow.pk}"), 404, "not_found")

    workflows = data_of(api.get("/v1/workflows"))
    assert sorted(item["name"] for item in workflows["items"]) == sorted(["flow", seeds.DEFAULT_WORKFLOW])
    assert set(workflows) == PAGE_KEYS
    assert [item["name"] for item in data_of(api.get("/v1/workflows", {"visibility": "private"}))["items"]] == ["flow"]


@pytest.mark.parametrize(
    "payload, field",
    [
        ({"schema": {"kind": "workflow.chat"}}, "name"),
        ({"name": "x"}, "schema"),
        ({"name": ["x"], "schema": {}}, "name"),
        ({"name": "", "schema": {}}, "name"),
        ({"name": "x" * 201, "schema": {}}, "name"),
        ({"name": "nul\x00name", "schema": {}}, "name"),
        ({"name": "x", "schema": {}, "visibility": "public"}, "visibility"),
        ({"name": "x", "schema": {}, "description": {"a": 1}}, "description"),
        ({"name": "x", "schema": {}, "type": {"family": "workflow"}}, "type"),
    ],
)
def test_bad_create_bodies_are_validation_errors(client_for, user, payload, field):
    error = error_of(client_for(user).post("/v1/artifacts", payload, format="json"), 400, "validation_error")
    assert field in error["details"], error


@pytest.mark.parametrize(
    "raw, content_type",
    [
        (b"{not json", "application/json"),
        (b'{"name": "x", "schema": {"kind": "workflow.chat"', "application/json"),
        (b'["name", "x"]', "application/json"),
        (b"\xff\xfe\x00", "application/json"),
        (b"null", "application/json"),
        (b'"just a string"', "application/json"),
    ],
)
def test_bodies_that_are_not_a_json_object_are_validation_errors(client_for, user, workflow_body, raw, content_type):
    api = client_for(user)
    artifact = services.artifact_create(actor=user, name="flow", body=workflow_body)
    error_of(api.generic("POST", "/v1/artifacts", raw, content_type=content_type), 400, "validation_error")
    error_of(
        api.generic("PATCH", f"/v1/artifacts/{artifact.pk}", raw, content_type=content_type), 400, "validation_error"
    )
    assert Artifact.objects.filter(owner=user).count() == 1 and artifact.versions.count() == 1


def test_nul_bytes_and_deep_nesting_in_a_body_are_validation_errors(client_for, user, workflow_body):
    api = client_for(user)
    artifact = services.artifact_create(actor=user, name="flow", body=workflow_body)
    url = f"/v1/artifacts/{artifact.pk}"

    nul_key = {
        **workflow_body,
        "nodes": [{**workflow_body["nodes"][0], "inputs": {"a\x00": "x"}}, workflow_body["nodes"][1]],
    }
    assert (
        error_of(api.patch(url, {"schema": nul_key}, format="json"), 400, "validation_error")["details"]["pointer"]
        == "/schema/nodes/0/inputs/a\x00"
    )
    nul_patch = {"patch": [{"op": "add", "path": "/nodes/0/inputs/note", "value": "a\x00b"}]}
    assert (
        error_of(api.patch(url, nul_patch, format="json"), 400, "validation_error")["details"]["pointer"]
        == "/patch/0/value"
    )
    deep = {"leaf": 1}
    for _ in range(100):
        deep = {"deeper": deep}
    nested = {**workflow_body, "nodes": [{**workflow_body["nodes"][0], "inputs": deep}, workflow_body["nodes"][1]]}
    error_of(api.post("/v1/artifacts", {"name": "deep", "schema": nested}, format="json"), 400, "validation_error")
    assert artifact.versions.count() == 1 and not Artifact.objects.filter(name="deep").exists()


def test_unknown_ids_are_not_found_in_the_envelope(client_for, user):
    api = client_for(user)
    error_of(api.get("/v1/artifacts/00000000-0000-0000-0000-000000000000"), 404, "not_found")
    error_of(api.get("/v1/artifacts/not-a-uuid"), 404, "not_found")
    error_of(api.get("/v1/tools/specs/00000000-0000-0000-0000-000000000000"), 404, "not_found")


@pytest.mark.parametrize(
    "method, url",
    [
        ("get", "/v1/artifacts"),
        ("post", "/v1/artifacts"),
        ("get", "/v1/artifacts/00000000-0000-0000-0000-000000000000"),
        ("patch", "/v1/artifacts/00000000-0000-0000-0000-000000000000"),
        ("delete", "/v1/artifacts/00000000-0000-0000-0000-000000000000"),
        ("get", "/v1/artifacts/00000000-0000-0000-0000-000000000000/versions"),
        ("get", "/v1/tools/specs"),
        ("get", "/v1/tools/specs/00000000-0000-0000-0000-000000000000"),
        ("get", "/v1/workflows"),
    ],
)
def test_unauthenticated_requests_are_refused(method, url):
    response = getattr(APIClient(), method)(url, {}, format="json") if method != "get" else APIClient().get(url)
    error_of(response, 401, "unauthorized")
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_a_bearer_token_works_end_to_end(api_client, login_tokens, user, workflow_body):
    tokens = login_tokens(user)
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens['access_token']}")
    created = data_of(api_client.post("/v1/artifacts", {"name": "flow", "schema": workflow_body}, format="json"), 201)
    assert data_of(api_client.get("/v1/workflows", {"visibility": "private"}))["items"][0]["id"] == created["id"]
    api_client.credentials(HTTP_AUTHORIZATION="Bearer not-a-token")
    error_of(api_client.get("/v1/artifacts"), 401, "unauthorized")
