"""/v1/clusters, /v1/skills and the Skills page: what each user may see and do."""

import json

import pytest
from celery import current_app

from apps.accounts.models import User
from apps.artifacts import services as artifact_services
from apps.artifacts.selectors import global_artifact
from apps.training import services, skills
from apps.training.models import PreferenceEvent, SemanticCluster, SkillProposal, TrainingJob
from apps.training.tests.topics import BREAD, ENGINES

pytestmark = pytest.mark.django_db


@pytest.fixture
def sent(monkeypatch):
    calls = []
    monkeypatch.setattr(current_app, "send_task", lambda name, args, queue: calls.append((name, args[0], queue)))
    return calls


@pytest.fixture
def small_skills():
    """Proposals from 8 signals, so the tests stay quick."""
    policy = global_artifact(kind="policy.training", name="training.default")
    clustering = {**policy.body["clustering"], "skill": {**policy.body["clustering"]["skill"], "min_events": 8}}
    artifact_services.artifact_update(
        actor=None, artifact=policy, body={**policy.body, "clustering": clustering}, change_note="Small topics."
    )


def signal(user, prompt):
    event = PreferenceEvent.objects.create(
        owner=user, kind="thumbs_up", score=1.0, prompt=prompt, prompt_embedding=services.embed(prompt)
    )
    skills.cluster_event_add(event=event)


@pytest.fixture
def people(make_user, small_skills):
    alice, bob = make_user(), make_user()
    admin = make_user(role=User.Role.ADMIN)
    for prompt in BREAD[:20]:
        signal(alice, prompt)
    for prompt in ENGINES[:4]:
        signal(bob, prompt)
    skills.clusters_maintain()
    return alice, bob, admin


def as_user(api_client, login_tokens, user):
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {login_tokens(user)['access_token']}")
    return api_client


def test_a_user_lists_their_topics_and_reads_one_with_its_samples(api_client, login_tokens, people):
    alice, _, _ = people
    client = as_user(api_client, login_tokens, alice)
    items = client.get("/v1/clusters").json()["data"]["items"]
    (bread,) = [c for c in items if c["status"] == "active"]
    assert bread["scope"] == "user" and bread["size"] >= 8 and bread["proposal"]["status"] == "pending"
    detail = client.get(f"/v1/clusters/{bread['id']}").json()["data"]
    assert detail["samples"] and {s["prompt"] for s in detail["samples"]} <= set(BREAD)
    skills_list = client.get("/v1/skills").json()["data"]
    assert [p["cluster_id"] for p in skills_list["proposals"]] == [bread["id"]] and skills_list["items"] == []


def test_bad_input_is_a_400_naming_the_field(api_client, login_tokens, people):
    alice, _, _ = people
    client = as_user(api_client, login_tokens, alice)
    for url in ("/v1/clusters?scope=everyone", "/v1/skills?scope=%00"):
        response = client.get(url)
        assert response.status_code == 400, response.content
        body = response.json()
        assert body["error"]["code"] == "validation_error" and "scope" in body["error"]["details"]
    proposal = SkillProposal.objects.get(owner=alice)
    response = client.post(f"/v1/skills/proposals/{proposal.pk}/dismiss", {"reason": "x" * 2001}, format="json")
    assert response.status_code == 400 and "reason" in response.json()["error"]["details"]
    proposal.refresh_from_db()
    assert proposal.status == SkillProposal.Status.PENDING, "nothing changed"


def test_another_users_topics_and_proposals_are_404_and_never_leak_their_text(api_client, login_tokens, people):
    alice, bob, _ = people
    mine = SemanticCluster.objects.filter(owner=alice).first()
    proposal = SkillProposal.objects.get(owner=alice)
    client = as_user(api_client, login_tokens, bob)
    assert client.get(f"/v1/clusters/{mine.pk}").status_code == 404
    assert client.post(f"/v1/skills/proposals/{proposal.pk}/dismiss", {}, format="json").status_code == 404
    assert client.post(f"/v1/skills/proposals/{proposal.pk}/approve", {}, format="json").status_code == 404
    assert client.get("/v1/skills").json()["data"]["proposals"] == []
    assert all(c["scope"] == "user" for c in client.get("/v1/clusters").json()["data"]["items"])
    # Everyone's topics: Bob sees Alice's bread topic exists, but not one of her words.
    global_items = client.get("/v1/clusters?scope=global").json()["data"]["items"]
    assert global_items and all("owner_id" not in c for c in global_items)
    for cluster in global_items:
        text = json.dumps(client.get(f"/v1/clusters/{cluster['id']}").json())
        assert not any(prompt in text for prompt in BREAD), cluster
    assert "owner_id" not in json.dumps(global_items)
    # Bob may not ask for every user's topics.
    assert all(c["scope"] == "user" for c in client.get("/v1/clusters?scope=all").json()["data"]["items"])
    proposal.refresh_from_db()
    assert proposal.status == SkillProposal.Status.PENDING


def test_only_an_admin_approves_and_approval_queues_the_skills_training(
    api_client, login_tokens, people, sent, django_capture_on_commit_callbacks
):
    alice, _, admin = people
    proposal = SkillProposal.objects.get(owner=alice)
    client = as_user(api_client, login_tokens, alice)
    response = client.post(f"/v1/skills/proposals/{proposal.pk}/approve", {}, format="json")
    assert response.status_code == 403 and response.json()["error"]["code"] == "forbidden"
    client = as_user(api_client, login_tokens, admin)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"/v1/skills/proposals/{proposal.pk}/approve", {"reason": "Useful."}, format="json")
    assert response.status_code == 200, response.content
    data = response.json()["data"]
    assert data["status"] == "approved" and data["adapter_id"] and data["job_id"]
    job = TrainingJob.objects.get(pk=data["job_id"])
    assert job.owner == alice and str(job.adapter_id) == data["adapter_id"]
    assert job.adapter.owner == alice and job.adapter.body["cluster_id"] == str(proposal.cluster_id)
    assert ("apps.training.tasks.train_adapter", str(job.pk), "train") in sent
    assert client.post(f"/v1/skills/proposals/{proposal.pk}/approve", {}, format="json").status_code == 409
    # The skill is Alice's: listed for her, and a candidate for her routing only.
    skills_list = as_user(api_client, login_tokens, alice).get("/v1/skills").json()["data"]
    assert [s["id"] for s in skills_list["items"]] == [data["adapter_id"]]
    assert skills_list["items"][0]["scope"] == "user"


def test_the_owner_dismisses_and_the_topic_is_not_proposed_again(api_client, login_tokens, people):
    alice, _, _ = people
    proposal = SkillProposal.objects.get(owner=alice)
    client = as_user(api_client, login_tokens, alice)
    response = client.post(f"/v1/skills/proposals/{proposal.pk}/dismiss", {"reason": "Not needed"}, format="json")
    assert response.status_code == 200 and response.json()["data"]["status"] == "dismissed"
    signal(alice, BREAD[21])
    skills.clusters_maintain()
    assert SkillProposal.objects.filter(owner=alice).count() == 1


def test_the_skills_page_draws_the_map_and_shows_only_what_the_user_may_see(client, people):
    alice, bob, admin = people
    client.force_login(alice)
    page = client.get("/skills/").content.decode()
    assert "<svg" in page and "<circle" in page and "Proposed skills" in page
    assert BREAD[0][:30] in page or any(p[:30] in page for p in BREAD)
    assert "Approve and train" not in page, "only admins approve"
    client.force_login(bob)
    page = client.get("/skills/?scope=global").content.decode()
    assert not any(p[:40] in page for p in BREAD), "Bob never reads Alice's words"
    assert "Proposed skills" not in page
    client.force_login(admin)
    page = client.get("/skills/?scope=all").content.decode()
    assert "Approve and train" in page and alice.email in page
