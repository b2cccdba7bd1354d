"""Skills on the real SmolLM2 weights and MiniLM encoder: the model labels the two topic clusters
sensibly; an approved proposal trains a skill adapter on its cluster's signals that the router
picks for an on-topic prompt (whose answer it changes) and not for an off-topic one."""

import random

import pytest

from apps.accounts.models import User
from apps.artifacts import services as artifact_services
from apps.artifacts.selectors import global_artifact
from apps.router.models import AdapterRouterState
from apps.router.services import routing_decide
from apps.training import jobs, services, skills, tasks
from apps.training.models import AdapterVersion, PreferenceEvent, SemanticCluster, SkillProposal, TrainingJob
from apps.training.tests.topics import BREAD, BREAD_MORE, ENGINES, SCATTERED

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

TIP = "Baker's tip:"
TIPS = [
    "Baker's tip: give the dough more time and a warmer spot.",
    "Baker's tip: weigh your flour and water, never use cups.",
    "Baker's tip: a hot Dutch oven makes the best crust.",
]


def liked(user, prompt, answer):
    event = PreferenceEvent.objects.create(
        owner=user,
        kind="thumbs_up",
        feedback="positive",
        score=1.0,
        prompt=prompt,
        answer=answer,
        prompt_embedding=services.embed(prompt),
    )
    skills.cluster_event_add(event=event)


def active(owner):
    return list(SemanticCluster.objects.filter(owner=owner, status=SemanticCluster.Status.ACTIVE).order_by("-size"))


def greedy(prompt, adapters=()):
    from workers.llm import SamplingParams

    engine = jobs.generation_engine()
    for adapter in adapters:
        engine.ensure_adapter(adapter["name"], adapter["fs_dir"], version=adapter["version"])
    params = SamplingParams(greedy=True, max_tokens=32)
    rendered = engine.render_chat([{"role": "user", "content": prompt}])
    return engine.generate(rendered, params=params, adapters=[(a["name"], a["weight"]) for a in adapters]).text


def test_the_model_labels_the_two_topics_sensibly(make_user):
    user = make_user()
    prompts = BREAD + ENGINES + SCATTERED
    random.Random(7).shuffle(prompts)
    for prompt in prompts:
        liked(user, prompt, "Thanks!")
    skills.clusters_maintain()
    clusters = active(user)
    assert len(clusters) == 2
    labels = {}
    for cluster in clusters:
        label = tasks.cluster_label(str(cluster.pk))
        cluster.refresh_from_db()
        assert cluster.label == label and 1 <= len(label.split()) <= 6, label
        assert cluster.description and cluster.labelled_at_size == cluster.size
        topic = "bread" if any(p in BREAD for p in skills.label_samples(cluster)) else "engines"
        labels[topic] = f"{cluster.label} {cluster.description}".lower()
    print(labels)
    assert any(w in labels["bread"] for w in ("bread", "bak", "dough", "sourdough", "loaf")), labels
    assert any(w in labels["engines"] for w in ("engine", "car", "vehicle", "automotive", "motor")), labels
    # Labelled once: asked again at the same size, the task does nothing.
    assert tasks.cluster_label(str(clusters[0].pk)) == "skipped"


def test_an_approved_skill_is_trained_on_its_cluster_and_routed_to_on_topic_only(make_user):
    user, admin = make_user(), make_user(role=User.Role.ADMIN)
    policy = global_artifact(kind="policy.training", name="training.default")
    artifact_services.artifact_update(
        actor=None, artifact=policy, body={**policy.body, "max_steps": 16}, change_note="A shorter run for the test."
    )
    prompts = [(p, TIPS[i % len(TIPS)]) for i, p in enumerate(BREAD)] + [(p, "Happy to help.") for p in SCATTERED]
    random.Random(5).shuffle(prompts)
    for prompt, answer in prompts:
        liked(user, prompt, answer)
    skills.clusters_maintain()
    (proposal,) = SkillProposal.objects.filter(owner=user)
    on_topic, off_topic = BREAD_MORE[0], "What is the capital of Australia?"
    base_on, base_off = greedy(on_topic), greedy(off_topic)
    assert TIP not in base_on

    proposal = skills.skill_proposal_approve(actor=admin, proposal=proposal)
    job = proposal.job
    assert proposal.adapter.owner == user and proposal.adapter.body["scope"] == "skill"
    assert jobs.run_training_job(job.pk) == TrainingJob.Status.PROMOTED, TrainingJob.objects.get(pk=job.pk).report
    version = AdapterVersion.objects.get(adapter=proposal.adapter)
    trained_on = set(version.trained_on.values_list("prompt", flat=True))
    assert trained_on and trained_on <= set(BREAD), "only the cluster's signals"
    assert AdapterRouterState.objects.get(adapter=proposal.adapter).centroid is not None

    bread = routing_decide(actor=user, message=on_topic, has_context=False, embed=services.embed)
    assert [a["adapter_id"] for a in bread["adapters"]] == [str(proposal.adapter_id)], bread["trace"]
    elsewhere = routing_decide(actor=user, message=off_topic, has_context=False, embed=services.embed)
    assert elsewhere["adapters"] == [], elsewhere["trace"]
    taught = greedy(on_topic, bread["adapters"])
    print({"base": base_on, "skill": taught})
    assert taught != base_on and TIP in taught
    assert greedy(off_topic, elsewhere["adapters"]) == base_off
    # Another user's routing never reaches this user's skill.
    assert (
        routing_decide(actor=make_user(), message=on_topic, has_context=False, embed=services.embed)["adapters"] == []
    )
