"""The routing policy editor page: faults shown next to their rule, a dry run over the user's
latest messages that lists the decisions an edit would change, saving, going back to the
default, admins editing the global default; and adapters' usage and success scores."""

import json

import pytest

from apps.accounts.models import User
from apps.artifacts.models import Artifact
from apps.artifacts.seeds import ROUTING_POLICY
from apps.conversations import services as conversation_services
from apps.conversations.models import Message
from apps.router import selectors
from apps.router.models import AdapterRouterState
from apps.router.state import judgement_record, usage_record
from apps.router.tests.test_routing import BAKING, ENGINES, skill
from apps.training import services as training_services

pytestmark = pytest.mark.django_db

STRICT = json.loads(json.dumps(ROUTING_POLICY))
STRICT["rules"][1]["when"] = "adapter_similarity != null and adapter_similarity >= 0.99"


@pytest.fixture
def skills():
    return skill("baking", BAKING), skill("engines", ENGINES)


def said(user, text):
    _, _, answer = conversation_services.chat_turn_start(actor=user, content=text)
    conversation_services.generation_finish(message=answer, content="Sure.", status=Message.Status.COMPLETE, receipt={})
    answer.refresh_from_db()
    return answer


def post(client, body, action, query=""):
    return client.post(
        f"/routing/{query}", {"body": body if isinstance(body, str) else json.dumps(body), "action": action}
    )


def test_a_dry_run_lists_the_users_messages_an_edit_would_route_differently(client, make_user, skills):
    user, other = make_user(), make_user()
    said(user, "Why did my sourdough loaf come out flat?")
    said(user, "Who wrote Pride and Prejudice?")
    said(other, "How long should bread dough rise?")
    client.force_login(user)
    page = client.get("/routing/")
    assert page.status_code == 200 and "nearest_skill" in page.content.decode()
    response = post(client, STRICT, "dry_run")
    assert response.status_code == 200
    report = response.context["report"]
    assert report["messages_considered"] == 2, "only the user's own messages"
    (change,) = report["changes"]
    assert (
        "sourdough" in change["preview"] and change["after"] == [] and change["before"][0]["name"].startswith("skill-")
    )
    assert "would be routed differently" in response.content.decode()
    assert not Artifact.objects.filter(owner=user, kind="policy.routing").exists(), "a dry run saves nothing"


def test_a_syntax_error_is_shown_next_to_its_rule_and_nothing_is_saved(client, make_user):
    user = make_user()
    client.force_login(user)
    broken = json.loads(json.dumps(ROUTING_POLICY))
    broken["rules"][1]["when"] = "adapter_similarity >= "
    for action in ("dry_run", "save"):
        response = post(client, broken, action)
        assert response.status_code == 400
        fault = response.context["fault"]
        assert fault["rule"] == 1 and "nearest_skill" in fault["message"] and fault["pointer"] == "/rules/1/when"
        assert 'class="rule-fault"' in response.content.decode()
    response = post(client, '{"kind": "policy.routing", "rules": [', "save")
    assert response.status_code == 400 and "Not JSON" in response.context["fault"]["message"]
    assert not Artifact.objects.filter(owner=user, kind="policy.routing").exists()


def test_saving_makes_the_users_own_policy_and_reset_brings_back_the_default(client, make_user, skills):
    user, other = make_user(), make_user()
    client.force_login(user)
    assert post(client, STRICT, "save").status_code == 302
    own = selectors.routing_policy(actor=user)
    assert own.owner == user and own.current_version.body["rules"][1]["when"].endswith("0.99")
    assert selectors.routing_policy(actor=other).owner is None, "another user keeps the default"
    client.force_login(other)
    assert "0.99" not in client.get("/routing/").content.decode(), "never another user's policy"
    client.force_login(user)
    assert post(client, STRICT, "reset").status_code == 302
    assert selectors.routing_policy(actor=user).owner is None


def test_only_an_admin_edits_the_global_default(client, make_user):
    user, admin = make_user(), make_user(role=User.Role.ADMIN)
    client.force_login(user)
    post(client, STRICT, "save", "?policy=global")
    assert selectors.routing_policy(actor=make_user()).current_version.body == ROUTING_POLICY
    assert Artifact.objects.filter(owner=user, name="routing").exists(), "a user's edit stays their own"
    client.force_login(admin)
    assert post(client, STRICT, "save", "?policy=global").status_code == 302
    assert selectors.routing_policy(actor=make_user()).current_version.body["rules"][1]["when"].endswith("0.99")


def test_adapters_count_their_uses_and_judged_answers_move_their_success(make_user, skills):
    baking, engines = skills
    usage_record(adapter_ids=[baking.pk, baking.pk, engines.pk])
    usage_record(adapter_ids=[baking.pk])
    state = AdapterRouterState.objects.get(adapter=baking)
    assert state.usage_count == 2 and AdapterRouterState.objects.get(adapter=engines).usage_count == 1
    judgement_record(adapter_ids=[str(baking.pk)], score=1.0)
    judgement_record(adapter_ids=[str(baking.pk)], score=-1.0)
    judgement_record(adapter_ids=[str(baking.pk)], score=1.0)
    state.refresh_from_db()
    assert state.judged_count == 3 and state.success_score == pytest.approx(1 / 3)


def test_a_thumb_on_a_gated_answer_moves_its_adapters_success(make_user, skills, django_capture_on_commit_callbacks):
    baking, _ = skills
    user = make_user()
    answer = said(user, "Why is my bread dense?")
    gates = [{"adapter_id": str(baking.pk), "name": f"skill-{baking.pk}", "version": 1, "weight": 0.5}]
    answer.receipt = {"adapter_gates": gates}
    answer.save(update_fields=["receipt"])
    with django_capture_on_commit_callbacks(execute=True):
        training_services.feedback_record(actor=user, message=answer, feedback="negative", routing=True)
    state = AdapterRouterState.objects.get(adapter=baking)
    assert state.judged_count == 1 and state.success_score == -1.0
