"""Topics from signals on the real MiniLM encoder: two topics and some scattered questions give
exactly two active clusters whose ids survive the periodic pass and more signals; a qualifying
cluster proposes one skill; no user's clusters or proposals hold another user's signals."""

import random

import pytest

from apps.training import selectors, services, skills
from apps.training.models import ClusterMembership, PreferenceEvent, SemanticCluster, SkillProposal
from apps.training.tests.topics import BREAD, BREAD_MORE, ENGINES, ENGINES_MORE, SCATTERED

pytestmark = pytest.mark.django_db


def signal(user, prompt, *, liked=True):
    event = PreferenceEvent.objects.create(
        owner=user,
        kind="thumbs_up" if liked else "thumbs_down",
        feedback="positive" if liked else "negative",
        score=1.0 if liked else -1.0,
        prompt=prompt,
        answer=f"An answer to: {prompt}",
        prompt_embedding=services.embed(prompt),
    )
    skills.cluster_event_add(event=event)
    return event


def topic_of(cluster, bread=BREAD + BREAD_MORE, engines=ENGINES + ENGINES_MORE):
    prompts = set(ClusterMembership.objects.filter(cluster=cluster).values_list("event__prompt", flat=True).distinct())
    return {"bread" if p in bread else "engines" if p in engines else "other" for p in prompts}


def active(owner):
    return list(SemanticCluster.objects.filter(owner=owner, status=SemanticCluster.Status.ACTIVE).order_by("-size"))


@pytest.fixture
def two_topics(make_user):
    user = make_user()
    prompts = BREAD + ENGINES + SCATTERED
    random.Random(7).shuffle(prompts)
    events = [signal(user, prompt) for prompt in prompts]
    skills.clusters_maintain()
    return user, events


def test_two_topics_and_scattered_questions_give_two_active_clusters_whose_ids_stay(two_topics):
    user, events = two_topics
    clusters = active(user)
    assert [topic_of(c) for c in clusters] in ([{"bread"}, {"engines"}], [{"engines"}, {"bread"}]), [
        (c.size, topic_of(c)) for c in clusters
    ]
    assert all(c.size >= 5 and c.cohesion > 0.5 and c.positive_ratio == 1.0 for c in clusters)
    global_clusters = active(None)
    assert len(global_clusters) == 2 and all(len(topic_of(c)) == 1 for c in global_clusters)
    ids = {str(c.pk) for c in clusters + global_clusters}
    # Every live signal sits in one of the user's clusters and one global cluster.
    assert ClusterMembership.objects.filter(event__in=events).count() == 2 * len(events)

    for _ in range(5):
        report = skills.clusters_maintain()
        assert all(not r["merged"] and not r["split"] for r in report.values()), report
        assert {str(c.pk) for c in active(user) + active(None)} == ids
    for prompt in BREAD_MORE + ENGINES_MORE:
        signal(user, prompt)
    skills.clusters_maintain()
    after = active(user)
    assert {str(c.pk) for c in after + active(None)} == ids, [(c.size, topic_of(c)) for c in after]
    assert sum(c.size for c in after) > sum(c.size for c in clusters)
    event = PreferenceEvent.objects.get(owner=user, prompt=BREAD_MORE[0])
    bread = next(c for c in after if topic_of(c) == {"bread"})
    assert event.cluster_id == str(bread.pk)


def test_a_qualifying_cluster_proposes_exactly_one_skill(two_topics, make_user):
    user, _ = two_topics
    bread = next(c for c in active(user) if topic_of(c) == {"bread"})
    assert bread.size >= 20 and bread.cohesion >= 0.6, (bread.size, bread.cohesion)
    proposals = SkillProposal.objects.filter(owner=user)
    assert [p.cluster_id for p in proposals] == [bread.pk]
    assert proposals[0].status == SkillProposal.Status.PENDING and proposals[0].evidence["size"] == bread.size
    skills.clusters_maintain()
    signal(user, BREAD_MORE[1])
    assert SkillProposal.objects.filter(owner=user).count() == 1

    # A cluster of disliked answers is no skill to grow.
    grumpy = make_user()
    for prompt in BREAD:
        signal(grumpy, prompt, liked=False)
    skills.clusters_maintain()
    assert active(grumpy) and not SkillProposal.objects.filter(owner=grumpy).exists()


def test_forgetting_a_signal_takes_it_out_of_its_clusters(two_topics):
    user, events = two_topics
    bread = next(c for c in active(user) if topic_of(c) == {"bread"})
    member = ClusterMembership.objects.filter(cluster=bread).first().event
    services.event_forget(actor=user, event=member)
    assert not ClusterMembership.objects.filter(event=member).exists()
    skills.clusters_maintain()
    bread.refresh_from_db()
    assert str(member.pk) not in bread.sample_event_ids
    assert bread.size == ClusterMembership.objects.filter(cluster=bread).count()


def test_a_users_clusters_and_proposals_never_hold_another_users_signals(two_topics, make_user):
    owner, _ = two_topics
    other = make_user()
    for prompt in ENGINES[:6]:
        signal(other, prompt)
    skills.clusters_maintain()
    for cluster in SemanticCluster.objects.filter(owner=other):
        assert set(ClusterMembership.objects.filter(cluster=cluster).values_list("event__owner", flat=True)) == {
            other.pk
        }
    assert not SkillProposal.objects.filter(owner=other).exists()
    # The other user's engine questions joined the global engine cluster, not the owner's.
    engines = next(c for c in active(None) if topic_of(c) == {"engines"})
    owners = set(ClusterMembership.objects.filter(cluster=engines).values_list("event__owner", flat=True))
    assert owners == {owner.pk, other.pk}
    # In a global cluster a user reads only their own signals' text.
    samples = selectors.cluster_samples(actor=other, cluster=engines)
    assert samples and {s["prompt"] for s in samples} <= set(ENGINES[:6])
    assert selectors.clusters_list(actor=other).filter(owner=owner).count() == 0


def test_the_pass_splits_a_loose_cluster_and_the_larger_half_keeps_the_id(make_user):
    user = make_user()
    # A join threshold this low lets two topics fall into one cluster, as a looser policy would.
    loose = {**skills.clustering_policy(), "join_similarity": 0.0, "merge_similarity": 0.99}
    for prompt in BREAD[:12] + ENGINES[:7]:
        event = PreferenceEvent.objects.create(
            owner=user, kind="thumbs_up", score=1.0, prompt=prompt, prompt_embedding=services.embed(prompt)
        )
        skills.cluster_event_add(event=event, policy=loose)
    (mixed,) = SemanticCluster.objects.filter(owner=user)
    report = skills.clusters_maintain_scope(owner_id=user.pk, policy={**loose, "split_cohesion": 0.6})
    assert report["split"] and report["split"][0]["cluster"] == str(mixed.pk)
    mixed.refresh_from_db()
    newcomer = SemanticCluster.objects.get(pk=report["split"][0]["new"])
    assert topic_of(mixed) == {"bread"} and topic_of(newcomer) == {"engines"}
    assert mixed.size == 12 and newcomer.size == 7


def test_the_training_policy_can_approve_skills_by_itself(make_user, monkeypatch, django_capture_on_commit_callbacks):
    from celery import current_app

    from apps.artifacts import services as artifact_services
    from apps.artifacts.selectors import global_artifact

    sent = []
    monkeypatch.setattr(current_app, "send_task", lambda name, args, queue: sent.append((name, args[0], queue)))
    policy = global_artifact(kind="policy.training", name="training.default")
    clustering = policy.body["clustering"]
    artifact_services.artifact_update(
        actor=None,
        artifact=policy,
        body={**policy.body, "clustering": {**clustering, "skill": {**clustering["skill"], "auto_approve": True}}},
        change_note="Skills train without an admin.",
    )
    user = make_user()
    with django_capture_on_commit_callbacks(execute=True):
        for prompt in BREAD:
            signal(user, prompt)
        skills.clusters_maintain()
    (proposal,) = SkillProposal.objects.filter(owner=user)
    assert proposal.status == SkillProposal.Status.APPROVED and proposal.decided_by is None
    assert "auto_approve" in proposal.reason and proposal.adapter.owner == user
    assert ("apps.training.tasks.train_adapter", str(proposal.job_id), "train") in sent
