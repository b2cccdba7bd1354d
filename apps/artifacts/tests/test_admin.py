import html
import json

import pytest
from django.urls import reverse

from apps.artifacts import seeds, services
from apps.artifacts.models import Artifact, ArtifactVersion

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client, admin_user):
    client.force_login(admin_user)
    return client


@pytest.fixture
def flow(workflow_body):
    return services.artifact_create(
        actor=None, name="admin flow", description="Shared by all.", body=workflow_body, visibility="global"
    )


def change_url(artifact):
    return reverse("admin:artifacts_artifact_change", args=[artifact.pk])


def edit(admin_client, artifact, body, **fields):
    text = body if isinstance(body, str) else json.dumps(body)
    data = {"description": artifact.description, "body": text, "change_note": "", **fields, "_save": "Save"}
    return admin_client.post(change_url(artifact), data)


def test_the_changelist_searches_and_filters(admin_client, user, flow, workflow_body):
    services.artifact_create(actor=user, name="user flow", description="about penguins", body=workflow_body)
    url = reverse("admin:artifacts_artifact_changelist")

    page = admin_client.get(url)
    assert page.status_code == 200
    text = page.content.decode()
    for name in ["admin flow", "user flow", *seeds.seeded_names()]:
        assert name in text
    assert "Version" in text and "Visibility" in text

    found = admin_client.get(url, {"q": "penguins"}).content.decode()
    assert "user flow" in found and "admin flow" not in found
    only_tools = admin_client.get(url, {"kind": "tool.spec"}).content.decode()
    assert "llm.generic_chat_v1" in only_tools and "admin flow" not in only_tools
    owned = admin_client.get(url, {"global": "no"}).content.decode()
    assert "user flow" in owned and "admin flow" not in owned
    global_ones = admin_client.get(url, {"global": "yes", "visibility": "global"}).content.decode()
    assert "admin flow" in global_ones and "user flow" not in global_ones


def test_the_change_page_has_a_json_editor_and_lists_versions(admin_client, flow):
    services.artifact_patch(actor=None, artifact=flow, patch=[{"op": "add", "path": "/timeout_ms", "value": 9000}])
    page = admin_client.get(change_url(flow))
    assert page.status_code == 200
    text = page.content.decode()
    editor = page.context["adminform"].form["body"]
    assert editor.value() == json.dumps(flow.versions.get(version=2).body, indent=2, sort_keys=True)
    assert '<textarea name="body"' in text
    assert html.escape('  "entrypoint": "answer",', quote=True) in text
    assert 'id="artifact-versions"' in text and "v2 (current)" in text and "Revert to this version" in text
    diff_url = reverse("admin:artifacts_artifact_diff", args=[flow.pk])
    assert diff_url in text and f"{diff_url}?a=1&amp;b=2" in text


def test_saving_a_valid_edit_makes_a_new_version(admin_client, admin_user, flow, workflow_body):
    edited = {**workflow_body, "timeout_ms": 45000}
    response = edit(admin_client, flow, edited, description="Tuned.", change_note="Longer timeout.")
    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else ""

    flow.refresh_from_db()
    assert flow.version_number == 2 and flow.body == edited and flow.description == "Tuned."
    newest = flow.current_version
    assert newest.created_by == "user" and newest.author == admin_user and newest.change_note == "Longer timeout."
    assert newest.parent.version == 1


def test_saving_an_invalid_body_shows_the_pointer_and_makes_no_version(admin_client, flow, workflow_body):
    broken = {
        **workflow_body,
        "nodes": [{**workflow_body["nodes"][0], "tool": "no.such_tool_v1"}, workflow_body["nodes"][1]],
    }
    response = edit(admin_client, flow, broken)
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "At /nodes/0/tool:" in errors["body"][0] and "no.such_tool_v1" in errors["body"][0]
    assert "At /nodes/0/tool:" in html.unescape(response.content.decode())

    not_json = edit(admin_client, flow, '{"kind": "workflow.chat",')
    assert not_json.status_code == 200 and not_json.context["adminform"].form.errors["body"]
    with_nul = edit(admin_client, flow, json.dumps({**workflow_body, "defaults": {"system_prompt": "a\x00"}}))
    assert "At /defaults/system_prompt:" in with_nul.context["adminform"].form.errors["body"][0]

    flow.refresh_from_db()
    assert flow.version_number == 1 and flow.versions.count() == 1 and flow.description == "Shared by all."


def test_adding_an_artifact_through_the_admin(admin_client, admin_user, workflow_body):
    url = reverse("admin:artifacts_artifact_add")
    assert admin_client.get(url).status_code == 200
    data = {"name": "house flow", "visibility": "global", "description": "", "body": json.dumps(workflow_body)}
    response = admin_client.post(url, {**data, "change_note": "", "_save": "Save"})
    assert response.status_code == 302
    created = Artifact.objects.get(name="house flow")
    assert created.owner is None and created.kind == "workflow.chat" and created.body == workflow_body
    assert created.current_version.author == admin_user

    duplicate = admin_client.post(url, {**data, "change_note": "", "_save": "Save"})
    assert duplicate.status_code == 200 and duplicate.context["adminform"].form.non_field_errors()
    assert Artifact.objects.filter(name="house flow").count() == 1


def test_the_diff_page_shows_added_and_removed_lines(admin_client, flow):
    services.artifact_patch(
        actor=None,
        artifact=flow,
        patch=[
            {"op": "add", "path": "/timeout_ms", "value": 9000},
            {"op": "replace", "path": "/entrypoint", "value": "end"},
        ],
    )
    url = reverse("admin:artifacts_artifact_diff", args=[flow.pk])
    page = admin_client.get(url, {"a": 1, "b": 2})
    assert page.status_code == 200
    lines = dict((line, kind) for kind, line in page.context["diff"])
    assert lines['-  "entrypoint": "answer",'] == "removed"
    assert lines['+  "entrypoint": "end",'] == "added"
    assert lines['+  "timeout_ms": 9000'] == "added"
    text = html.unescape(page.content.decode())
    assert '<span class="removed">-  "entrypoint": "answer",</span>' in text
    assert '<span class="added">+  "timeout_ms": 9000</span>' in text

    assert admin_client.get(url).context["diff"] == page.context["diff"]  # defaults: previous vs current
    same = admin_client.get(url, {"a": 2, "b": 2})
    assert same.context["diff"] == [] and "the same body" in same.content.decode()
    assert admin_client.get(url, {"a": 1, "b": 7}).status_code == 404
    assert admin_client.get(url, {"a": "first"}).status_code == 404


def test_reverting_from_the_admin(admin_client, admin_user, flow, workflow_body):
    services.artifact_update(actor=None, artifact=flow, body={**workflow_body, "timeout_ms": 9000})
    url = reverse("admin:artifacts_artifact_revert", args=[flow.pk, 1])

    assert admin_client.get(url).status_code == 405
    response = admin_client.post(url)
    assert response.status_code == 302 and response["Location"] == change_url(flow)
    flow.refresh_from_db()
    assert flow.version_number == 3 and flow.body == workflow_body
    assert flow.current_version.author == admin_user and flow.current_version.change_note == "Reverted to version 1."

    missing = admin_client.post(reverse("admin:artifacts_artifact_revert", args=[flow.pk, 9]), follow=True)
    assert "does not exist" in missing.content.decode()
    flow.refresh_from_db()
    assert flow.version_number == 3


def test_another_users_private_artifact_is_read_only_in_the_admin(admin_client, user, workflow_body):
    theirs = services.artifact_create(actor=user, name="their flow", body=workflow_body)
    page = admin_client.get(change_url(theirs))
    assert page.status_code == 200
    text = page.content.decode()
    assert '<textarea name="body"' not in text and "Revert to this version" not in text
    assert html.escape('"entrypoint": "answer"', quote=True) in text
    assert edit(admin_client, theirs, workflow_body, description="mine").status_code == 403
    assert admin_client.post(reverse("admin:artifacts_artifact_revert", args=[theirs.pk, 1])).status_code == 403
    assert theirs.versions.count() == 1


def test_deleting_an_artifact_takes_its_versions(admin_client, flow):
    url = reverse("admin:artifacts_artifact_delete", args=[flow.pk])
    confirm = admin_client.get(url)
    assert confirm.status_code == 200 and not confirm.context["perms_lacking"]
    assert admin_client.post(url, {"post": "yes"}).status_code == 302
    assert not Artifact.objects.filter(pk=flow.pk).exists()
    assert not ArtifactVersion.objects.filter(artifact_id=flow.pk).exists()


def test_versions_are_read_only_in_the_admin(admin_client, flow):
    version = flow.current_version
    listed = admin_client.get(reverse("admin:artifacts_artifactversion_changelist"))
    assert listed.status_code == 200 and "admin flow" in listed.content.decode()
    shown = admin_client.get(reverse("admin:artifacts_artifactversion_change", args=[version.pk]))
    assert shown.status_code == 200 and "<textarea" not in shown.content.decode()
    assert admin_client.get(reverse("admin:artifacts_artifactversion_add")).status_code == 403
    assert admin_client.post(reverse("admin:artifacts_artifactversion_delete", args=[version.pk])).status_code == 403
    assert (
        admin_client.post(
            reverse("admin:artifacts_artifactversion_change", args=[version.pk]), {"change_note": "rewritten"}
        ).status_code
        == 403
    )
    assert ArtifactVersion.objects.get(pk=version.pk).change_note == "Created."


def test_the_admin_is_for_admins_only(client, user, flow):
    client.force_login(user)
    assert client.get(change_url(flow)).status_code == 302
    assert client.get(reverse("admin:artifacts_artifact_diff", args=[flow.pk])).status_code == 302
    assert client.post(reverse("admin:artifacts_artifact_revert", args=[flow.pk, 1])).status_code == 302
    assert flow.versions.count() == 1
