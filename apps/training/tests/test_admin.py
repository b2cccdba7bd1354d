"""The admin for signals, corrections and memory: lists, filters, search, change pages, and writes
that go through the services."""

import pytest
from django.urls import reverse

from apps.conversations import services as conversation_services
from apps.conversations.models import Message
from apps.training import services
from apps.training.models import MemoryItem, PreferenceEvent

pytestmark = pytest.mark.django_db

EVENTS = reverse("admin:training_preferenceevent_changelist")
CORRECTIONS = reverse("admin:training_preferenceevent_corrections")
MEMORY = reverse("admin:training_memoryitem_changelist")


@pytest.fixture
def admin_client(client, make_user):
    client.force_login(make_user(email="root@example.com", role="admin"))
    return client


def answer(user, question, text):
    _, _, reply = conversation_services.chat_turn_start(actor=user, content=question)
    conversation_services.generation_finish(
        message=reply,
        content=text,
        status=Message.Status.COMPLETE,
        receipt={"model": "smollm2", "adapters": [{"name": "persona", "version": "7"}], "mean_logprob": -0.4},
    )
    reply.refresh_from_db()
    return reply


@pytest.fixture
def signals(make_user):
    ann = make_user(email="ann@example.com")
    bob = make_user(email="bob@example.com")
    zub = answer(ann, "What is the capital of Zubrowka?", "Zubrowka City.")
    old = services.feedback_record(
        actor=ann, message=zub, feedback="negative", explicit_signal="correction", corrected_text="Lutz, I think."
    )
    new = services.feedback_record(
        actor=ann,
        message=zub,
        feedback="negative",
        explicit_signal="correction",
        corrected_text="Lutz.",
        reasons=["wrong"],
    )
    liked = services.thumbs_set(actor=bob, message=answer(bob, "Name a river.", "The Danube."), kind="thumbs_up")
    mountain = answer(bob, "Name a mountain.", "Zugspitze.")
    forgotten = services.thumbs_set(actor=bob, message=mountain, kind="thumbs_down")
    services.event_forget(actor=bob, event=forgotten)
    evaluation = services.thumbs_set(actor=bob, message=answer(bob, "Eval prompt?", "Eval answer."), kind="thumbs_up")
    PreferenceEvent.objects.filter(pk=evaluation.pk).update(is_evaluation=True)
    return {"ann": ann, "bob": bob, "old": old, "new": new, "liked": liked, "forgotten": forgotten}


def rows(response) -> str:
    assert response.status_code == 200
    return response.content.decode()


def test_the_event_changelist_lists_filters_and_searches(admin_client, signals):
    page = rows(admin_client.get(EVENTS))
    assert "What is the capital of Zubrowka?" in page and "Name a river." in page and "Eval prompt?" in page
    assert f'href="{CORRECTIONS}"' in page

    assert "Name a river." not in rows(admin_client.get(EVENTS, {"kind__exact": "correction"}))
    assert "Name a river." in rows(admin_client.get(EVENTS, {"feedback__exact": "positive"}))
    assert "Zubrowka" not in rows(admin_client.get(EVENTS, {"feedback__exact": "positive"}))
    assert "Eval prompt?" in rows(admin_client.get(EVENTS, {"is_evaluation__exact": "1"}))
    assert "Name a river." not in rows(admin_client.get(EVENTS, {"is_evaluation__exact": "1"}))
    excluded = rows(admin_client.get(EVENTS, {"excluded": "yes"}))
    assert "1 preference event" in excluded and "Name a river." not in excluded
    assert "Name a river." in rows(admin_client.get(EVENTS, {"excluded": "no"}))

    assert "Name a river." in rows(admin_client.get(EVENTS, {"q": "Danube"}))  # the answer
    by_correction = rows(admin_client.get(EVENTS, {"q": "Lutz"}))
    assert "Zubrowka" in by_correction and "Name a river." not in by_correction
    by_owner = rows(admin_client.get(EVENTS, {"q": "ann@example.com"}))
    assert "Zubrowka" in by_owner and "Name a river." not in by_owner


def test_the_corrections_view_shows_prompt_correction_and_what_replaced_it(admin_client, signals):
    page = rows(admin_client.get(CORRECTIONS))
    assert "<h1>Corrections</h1>" in page
    assert "Lutz, I think." in page and "Lutz." in page and "Name a river." not in page
    assert "Replaced by" in page
    new_url = reverse("admin:training_preferenceevent_change", args=[signals["new"].pk])
    assert f'<a href="{new_url}">Lutz.</a>' in page  # the old correction links to its replacement
    current = rows(admin_client.get(CORRECTIONS, {"superseded": "no"}))
    assert "Lutz, I think." not in current and "Lutz." in current
    replaced = rows(admin_client.get(CORRECTIONS, {"superseded": "yes"}))
    assert "Lutz, I think." in replaced


def test_the_event_change_page_shows_the_receipt_and_the_judged_answer(admin_client, signals):
    url = reverse("admin:training_preferenceevent_change", args=[signals["new"].pk])
    page = rows(admin_client.get(url))
    assert '<pre class="pretty-json">' in page
    assert "&quot;mean_logprob&quot;: -0.4" in page and "&quot;version&quot;: &quot;7&quot;" in page
    assert "Zubrowka City." in page and "What is the capital of Zubrowka?" in page
    assert "prompt_embedding" not in page
    # Admins may mark evaluation traffic; what the user said stays as they said it.
    response = admin_client.post(url, {"is_evaluation": "on", "weight": "0.5", "cluster_id": "", "_save": "Save"})
    assert response.status_code == 302
    event = PreferenceEvent.objects.get(pk=signals["new"].pk)
    assert event.is_evaluation and event.weight == 0.5 and event.correction == "Lutz."
    assert admin_client.get(reverse("admin:training_preferenceevent_add")).status_code == 403


def test_the_forget_action_goes_through_the_service(admin_client, signals):
    response = admin_client.post(EVENTS, {"action": "forget", "_selected_action": [str(signals["liked"].pk)]})
    assert response.status_code == 302
    liked = PreferenceEvent.objects.get(pk=signals["liked"].pk)
    assert liked.excluded_at is not None and liked.prompt == "" and liked.answer == ""


def test_the_memory_admin_lists_filters_and_edits_through_the_services(admin_client, signals):
    ann, bob = signals["ann"], signals["bob"]
    fedora = services.memory_remember(actor=ann, text="I use Fedora.", pinned=True)
    services.memory_remember(actor=bob, text="Bob likes tea.")
    page = rows(admin_client.get(MEMORY))
    assert "I use Fedora." in page and "Bob likes tea." in page
    pinned = rows(admin_client.get(MEMORY, {"pinned__exact": "1"}))
    assert "I use Fedora." in pinned and "Bob likes tea." not in pinned
    owned = rows(admin_client.get(MEMORY, {"owner__id__exact": str(bob.pk)}))
    assert "Bob likes tea." in owned and "I use Fedora." not in owned
    assert "I use Fedora." not in rows(admin_client.get(MEMORY, {"q": "tea"}))

    url = reverse("admin:training_memoryitem_change", args=[fedora.pk])
    form = rows(admin_client.get(url))
    assert 'name="text"' in form and 'name="embedding"' not in form
    old_embedding = list(fedora.embedding)
    saved = admin_client.post(url, {"text": "  I use   Debian. ", "_save": "Save"})
    assert saved.status_code == 302
    fedora.refresh_from_db()
    assert fedora.text == "I use Debian." and not fedora.pinned and list(fedora.embedding) != old_embedding
    assert fedora.updated_at > fedora.created_at
    too_long = admin_client.post(url, {"text": "x" * 2001, "_save": "Save"})
    assert too_long.status_code == 200 and "at most 2000 characters" in too_long.content.decode()

    delete_url = reverse("admin:training_memoryitem_delete", args=[fedora.pk])
    assert admin_client.post(delete_url, {"post": "yes"}).status_code == 302
    assert not MemoryItem.objects.filter(pk=fedora.pk).exists()
    assert admin_client.get(reverse("admin:training_memoryitem_add")).status_code == 403


def test_the_admin_is_for_admins_only(client, make_user, signals):
    client.force_login(make_user())
    for url in (EVENTS, CORRECTIONS, MEMORY):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/admin/login/")


def test_an_admin_serves_a_version_the_gate_rejected(admin_client, make_user):
    from apps.training import adapters
    from apps.training.models import AdapterVersion

    owner = make_user(email="owner@example.com")
    adapter = adapters.persona_adapter_ensure(actor=owner)
    served = adapters.version_promote(
        version=AdapterVersion.objects.create(
            owner=owner, adapter=adapter, version=1, fs_dir="/a/v1", evaluation={"passed": True}
        )
    )
    rejected = AdapterVersion.objects.create(
        owner=owner,
        adapter=adapter,
        version=2,
        fs_dir="/a/v2",
        parent=served,
        status=AdapterVersion.Status.REJECTED,
        evaluation={
            "passed": False,
            "summary": "The candidate did not pass the gate: 1 of 3 checks failed (retention).",
        },
    )
    changelist = reverse("admin:training_adapterversion_changelist")
    listing = admin_client.get(changelist, {"status": "rejected"}).content.decode()
    assert "persona (owner@example.com)" in listing and listing.count('name="_selected_action"') == 1
    page = admin_client.get(reverse("admin:training_adapterversion_change", args=[rejected.pk])).content.decode()
    assert "1 of 3 checks failed (retention)" in page
    response = admin_client.post(
        changelist, {"action": "approve_over_gate", "index": 0, "_selected_action": [str(rejected.pk)]}, follow=True
    )
    assert "Persona v2 is now served" in response.content.decode()
    adapter.refresh_from_db()
    rejected.refresh_from_db()
    assert adapter.body["current_version"] == 2 and rejected.evaluation["approved_by"] == "root@example.com"
    # Serving it again is refused with the reason, not an error page.
    response = admin_client.post(
        changelist, {"action": "approve_over_gate", "index": 0, "_selected_action": [str(rejected.pk)]}, follow=True
    )
    assert "already being served" in response.content.decode()
    jobs = admin_client.get(reverse("admin:training_trainingjob_changelist"))
    assert jobs.status_code == 200
