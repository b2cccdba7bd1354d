"""Dry runs: a workflow's switch decisions replayed over the messages it answered; a routing
policy's decisions over the messages of the users it applies to, and no one else's."""

import pytest

from apps.artifacts import services as artifact_services
from apps.artifacts.seeds import ROUTING_POLICY
from apps.configops import services
from apps.configops.dryrun import UNKNOWN, switch_decisions
from apps.configops.tests.conftest import SKILL_RULE, STRICT

pytestmark = pytest.mark.django_db

BREAD = "Why is my sourdough bread so dense?"


def node_index(body, node_id):
    return next(index for index, node in enumerate(body["nodes"]) if node["id"] == node_id)


def test_switch_decisions_follow_the_inputs_and_stop_at_conditions_on_tool_outputs(chat_default):
    body = chat_default.body
    assert switch_decisions(body, {"message": "hi", "has_contexts": False}) == {"has_documents": "plain"}
    assert switch_decisions(body, {"message": "hi", "has_contexts": True}) == {
        "has_documents": "classify",
        "route": UNKNOWN,  # reads vars.intent: the classifier would have to run
    }


def test_a_workflow_patch_reports_the_messages_whose_branch_changes(admin, user, make_user, chat_default, say):
    asked = say(user, "What does my contract say about notice periods?")
    other = say(make_user(), "Tell me a joke.")
    switch = node_index(chat_default.body, "has_documents")
    patch = services.patch_propose(
        actor=admin,
        artifact=chat_default,
        ops=[{"op": "replace", "path": f"/nodes/{switch}/branches/0/when", "value": "input.has_contexts == true"}],
        justification="Ask the classifier on every message.",
    )
    report = patch.dry_run
    assert patch.status == "pending" and report["replay"] == "workflow"
    assert {str(asked.pk), str(other.pk)} <= set(report["affected_message_ids"])
    change = next(c for c in report["changes"] if c["message_id"] == str(asked.pk))
    assert change["before"] == {"has_documents": "plain"}
    assert change["after"] == {"has_documents": "classify", "route": UNKNOWN}


def test_a_workflow_patch_that_changes_no_branch_reports_no_message(admin, user, chat_default, say):
    say(user, "Hello there")
    patch = services.patch_propose(
        actor=admin,
        artifact=chat_default,
        ops=[{"op": "replace", "path": "/defaults/retrieval_k", "value": 6}],
        justification="More passages.",
    )
    assert patch.dry_run["messages_considered"] >= 1 and patch.dry_run["affected_message_ids"] == []


def test_the_global_policys_dry_run_leaves_out_users_with_their_own_policy(
    admin, make_user, routing_default, skills, say
):
    covered, own = make_user(), make_user()
    artifact_services.artifact_create(actor=own, name="routing", body=ROUTING_POLICY)
    covered_message, own_message = say(covered, BREAD), say(own, BREAD)
    patch = services.patch_propose(
        actor=admin,
        artifact=routing_default,
        ops=[{"op": "replace", "path": f"{SKILL_RULE}/when", "value": STRICT}],
        justification="Stricter.",
    )
    assert str(covered_message.pk) in patch.dry_run["affected_message_ids"]
    assert str(own_message.pk) not in patch.dry_run["affected_message_ids"]


def test_a_users_own_policy_is_replayed_over_that_users_messages_only(admin, make_user, skills, say, new_mirror_files):
    other = make_user()
    policy = artifact_services.artifact_create(actor=admin, name="routing", body=ROUTING_POLICY)
    mine, theirs = say(admin, BREAD), say(other, BREAD)
    patch = services.patch_propose(
        actor=admin,
        artifact=policy,
        ops=[{"op": "replace", "path": f"{SKILL_RULE}/when", "value": STRICT}],
        justification="Stricter for me.",
    )
    assert patch.dry_run["affected_message_ids"] == [str(mine.pk)]
    assert str(theirs.pk) not in str(patch.dry_run)
