"""The Skills page in headless Chromium: the topic map, topic cards with samples, and an admin
approving a proposal. Screenshots at desktop and phone size in test-artifacts/."""

import random

import pytest

from apps.accounts.models import User
from apps.conversations.tests.browser import chromium_page, log_in, shoot
from apps.training import services, skills
from apps.training.models import PreferenceEvent, SkillProposal
from apps.training.tests.topics import BREAD, ENGINES, SCATTERED

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def page(live_server_url, monkeypatch):
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with chromium_page("skills-last-state") as page:
        yield page


def test_the_skills_page_maps_topics_and_an_admin_approves_a_proposal(page, live_server_url, make_user):
    user = make_user(email="skills@example.com")
    admin = make_user(email="skills-admin@example.com", role=User.Role.ADMIN)
    prompts = BREAD + ENGINES + SCATTERED
    random.Random(7).shuffle(prompts)
    for prompt in prompts:
        event = PreferenceEvent.objects.create(
            owner=user, kind="thumbs_up", score=1.0, prompt=prompt, prompt_embedding=services.embed(prompt)
        )
        skills.cluster_event_add(event=event)
    skills.clusters_maintain()
    for cluster, label in zip(
        skills.SemanticCluster.objects.filter(owner=user, status="active").order_by("-size"),
        ("Baking bread at home", "Car engine trouble"),
        strict=False,
    ):
        skills.cluster_label_set(
            cluster=cluster, labelled={"label": label, "description": f"Questions about {label.lower()}."}
        )

    log_in(page, live_server_url, user.email)
    page.goto(f"{live_server_url}/skills/")
    assert page.locator(".cluster-map circle").count() >= 2
    assert page.locator(".cluster-map text", has_text="Baking bread at home").count() == 1
    assert page.locator(".cluster-card").first.locator(".samples li").count() >= 1
    assert page.get_by_text("Waiting for an admin to approve.").is_visible()
    shoot(page, "skills-page", full_page=True)
    page.set_viewport_size({"width": 390, "height": 844})
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"the page scrolls sideways on a phone by {overflow}px"

    page.context.clear_cookies()
    log_in(page, live_server_url, admin.email)
    page.goto(f"{live_server_url}/skills/?scope=all")
    page.get_by_role("button", name="Approve and train").click()
    page.wait_for_url(f"{live_server_url}/skills/")
    assert page.get_by_text("Approved: the skill adapter is training").is_visible()
    proposal = SkillProposal.objects.get(owner=user)
    assert proposal.status == SkillProposal.Status.APPROVED and proposal.decided_by == admin
