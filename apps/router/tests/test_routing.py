"""Routing on the real MiniLM encoder: two skill adapters whose centroids sit on two topics, the
seeded global policy, a user's own policy, edits that change the next decision, isolation."""

import pytest

from apps.artifacts import services as artifact_services
from apps.artifacts.seeds import ROUTING_POLICY
from apps.router import selectors
from apps.router.services import routing_decide
from apps.router.state import centroid_add
from apps.training import adapters
from apps.training.models import AdapterVersion
from apps.training.services import embed

pytestmark = pytest.mark.django_db

BAKING = [
    "How long should sourdough dough proof?",
    "Why is my bread dense after baking?",
    "What flour is best for baking baguettes?",
    "How do I feed a sourdough starter?",
]
ENGINES = [
    "How often should I change my car's engine oil?",
    "Why does my car engine overheat?",
    "What does a spark plug do in an engine?",
    "How do I check my car's coolant level?",
]


def skill(name, questions):
    artifact = artifact_services.artifact_create(
        actor=None,
        name=name,
        visibility="global",
        body={"kind": "adapter.lora", "scope": "skill", "base_model": "smollm2", "rank": 8, "current_version": None},
    )
    version = AdapterVersion.objects.create(owner=None, adapter=artifact, version=1, fs_dir=f"/skills/{name}/v0001")
    adapters.version_promote(version=version)
    centroid_add(adapter=artifact, embeddings=[embed(q) for q in questions])
    return artifact


def decide(user, text):
    return routing_decide(actor=user, message=text, has_context=False, embed=embed)


def names(decision):
    return [gate["name"] for gate in decision["adapter_gates"]]


@pytest.fixture
def skills():
    return skill("baking", BAKING), skill("engines", ENGINES)


def test_a_prompt_gets_the_skill_of_its_topic_and_not_the_other(make_user, skills):
    baking, engines = skills
    user = make_user()
    bread = decide(user, "My sourdough loaf came out flat, what went wrong with the proofing?")
    assert names(bread) == [f"skill-{baking.pk}"] and bread["adapter_gates"][0]["weight"] >= 0.35
    car = decide(user, "My car engine makes a knocking noise when it is cold.")
    assert names(car) == [f"skill-{engines.pk}"]
    assert decide(user, "Who wrote the novel Pride and Prejudice?")["adapter_gates"] == []
    rule = next(entry for entry in bread["trace"] if entry["id"] == "nearest_skill")
    assert rule["fired"] is True and f"skill-{baking.pk} at" in " ".join(rule["effect"])
    assert bread["policy"]["version"] >= 1


def test_the_persona_adapter_is_on_at_the_policys_weight_and_its_id_names_the_user(make_user):
    user, other = make_user(), make_user()
    persona = adapters.persona_adapter_ensure(actor=user)
    adapters.version_promote(
        version=AdapterVersion.objects.create(owner=user, adapter=persona, version=1, fs_dir="/p/v0001")
    )
    decision = decide(user, "Hello there")
    assert decision["adapters"] == [
        {"name": f"persona-{user.pk}", "adapter_id": str(persona.pk), "version": 1, "fs_dir": "/p/v0001", "weight": 1.0}
    ]
    assert decide(other, "Hello there")["adapters"] == []  # never another user's adapter


def test_editing_the_threshold_changes_the_next_decision_and_reverting_restores_it(make_user, skills):
    baking, _ = skills
    user = make_user()
    text = "How long should I knead bread dough?"
    assert names(decide(user, text)) == [f"skill-{baking.pk}"]
    policy = selectors.routing_policy(actor=user)
    strict = {**ROUTING_POLICY, "rules": [dict(r) for r in ROUTING_POLICY["rules"]]}
    strict["rules"][1]["when"] = "adapter_similarity != null and adapter_similarity >= 0.99"
    artifact_services.artifact_update(actor=None, artifact=policy, body=strict, change_note="stricter")
    assert decide(user, text)["adapter_gates"] == []
    policy.refresh_from_db()
    artifact_services.artifact_update(actor=None, artifact=policy, body=ROUTING_POLICY, change_note="back")
    assert names(decide(user, text)) == [f"skill-{baking.pk}"]


def test_a_users_own_policy_applies_to_them_only(make_user, skills):
    baking, _ = skills
    owner, other = make_user(), make_user()
    off = {
        "kind": "policy.routing",
        "rules": [{"id": "none", "when": "true", "action": {"type": "deactivate_all_adapters"}}],
    }
    artifact_services.artifact_create(actor=owner, name="routing", body=off)
    text = "Why is my bread dense after baking?"
    assert decide(owner, text)["adapter_gates"] == []
    assert names(decide(other, text)) == [f"skill-{baking.pk}"]


def test_a_rule_that_fails_to_evaluate_is_an_error_in_the_trace(make_user, skills):
    user = make_user()
    broken = {
        "kind": "policy.routing",
        "rules": [
            {
                "id": "typed",
                "when": "adapter_similarity > 'x'",
                "action": {"type": "activate_adapter_by_type", "adapter_type": "skill"},
            }
        ],
    }
    artifact_services.artifact_create(actor=user, name="routing", body=broken)
    decision = decide(user, "Why is my bread dense?")
    (entry,) = decision["trace"]
    assert entry["fired"] == "error" and "cannot compare" in entry["error"] and decision["adapters"] == []
