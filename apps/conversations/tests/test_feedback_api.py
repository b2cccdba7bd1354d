"""POST /v1/preferences and /v1/memory: the seed system's contract, isolation between users,
bad bodies in the envelope, the rate limit, and forgetting."""

import pytest

from apps.conversations.models import Conversation, Message
from apps.training import selectors as training_selectors
from apps.training.models import MemoryItem, PreferenceEvent

pytestmark = pytest.mark.django_db


def as_user(api_client, login_tokens, user):
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {login_tokens(user)['access_token']}")
    return api_client


def answered(user, question="What is the capital of Zubrowka?", answer="Zubrowka City."):
    conversation = Conversation.objects.create(owner=user)
    asked = Message.objects.create(conversation=conversation, owner=user, role="user", content=question)
    reply = Message.objects.create(
        conversation=conversation,
        owner=user,
        parent=asked,
        role="assistant",
        content=answer,
        receipt={"model": "m", "adapters": [{"name": "u", "version": "3"}], "routing_trace": [{"rule": "r"}]},
    )
    return conversation, reply


def body(conversation, reply, **extra):
    return {"conversation_id": str(conversation.pk), "message_id": str(reply.pk), "feedback": "negative", **extra}


def error(response, status):
    assert response.status_code == status, response.content
    payload = response.json()
    assert payload["status"] == "error"
    return payload["error"]


def test_a_correction_is_stored_with_the_receipt_and_the_prompts_embedding(api_client, login_tokens, make_user):
    user = make_user()
    client = as_user(api_client, login_tokens, user)
    conversation, reply = answered(user)
    response = client.post(
        "/v1/preferences",
        body(conversation, reply, explicit_signal="correction", corrected_text="Lutz", score=-0.5, notes="wrong city"),
        format="json",
    )
    assert response.status_code == 201, response.content
    data = response.json()["data"]
    assert set(data) >= {"id", "cluster_id", "feedback", "created_at"} and data["feedback"] == "negative"
    event = PreferenceEvent.objects.get(pk=data["id"])
    assert event.kind == "correction" and event.correction == "Lutz" and event.prompt.startswith("What is the capital")
    assert event.receipt["adapters"] == [{"name": "u", "version": "3"}] and event.routing_trace == [{"rule": "r"}]
    assert len(event.prompt_embedding) == 384 and event.score == -0.5 and event.notes == "wrong city"


def test_a_newer_correction_of_nearly_the_same_prompt_replaces_the_older(api_client, login_tokens, make_user):
    user = make_user()
    client = as_user(api_client, login_tokens, user)
    first_conversation, first = answered(user)
    older = client.post("/v1/preferences", body(first_conversation, first, corrected_text="Lutz"), format="json")
    second_conversation, second = answered(user, question="What is the capital of Zubrowka ?")
    newer = client.post("/v1/preferences", body(second_conversation, second, corrected_text="Nebelsbad"), format="json")
    assert (
        str(PreferenceEvent.objects.get(pk=older.json()["data"]["id"]).superseded_by_id) == newer.json()["data"]["id"]
    )
    other_conversation, other = answered(user, question="How many moons does Mars have?")
    kept = client.post("/v1/preferences", body(other_conversation, other, corrected_text="Two"), format="json")
    assert PreferenceEvent.objects.get(pk=kept.json()["data"]["id"]).superseded_by_id is None


def test_thumbs_replace_each_other_and_routing_feedback_is_its_own_kind(api_client, login_tokens, make_user):
    user = make_user()
    client = as_user(api_client, login_tokens, user)
    conversation, reply = answered(user)
    client.post("/v1/preferences", body(conversation, reply, feedback="like"), format="json")
    client.post("/v1/preferences", body(conversation, reply, feedback="dislike"), format="json")
    assert list(PreferenceEvent.objects.filter(owner=user).values_list("kind", flat=True)) == ["thumbs_down"]
    routed = client.post(
        "/v1/preferences/routing_feedback", body(conversation, reply, feedback="positive"), format="json"
    )
    assert routed.status_code == 201 and PreferenceEvent.objects.get(pk=routed.json()["data"]["id"]).kind == "routing"
    insights = client.get("/v1/preferences/insights").json()["data"]
    assert set(insights) == {"totals", "clusters", "adapters", "routing_feedback", "events"}
    assert insights["totals"]["events"] == 2 and insights["routing_feedback"]["positive"] == 1


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"feedback": "meh"}, "feedback"),
        ({"score": 2}, "score"),
        ({"weight": -0.1}, "weight"),
        ({"notes": "x" * 2001}, "notes"),
        ({"explicit_signal": "shrug"}, "explicit_signal"),
        ({"message_id": "not-an-id"}, "message_id"),
        ({"reasons": ["rude"]}, "reasons"),
        ({"corrected_text": "a\x00b"}, "corrected_text"),
        ({"explicit_signal": "correction", "corrected_text": ""}, "corrected_text"),
    ],
)
def test_bad_bodies_get_a_400_naming_the_field_and_store_nothing(api_client, login_tokens, make_user, change, field):
    user = make_user()
    client = as_user(api_client, login_tokens, user)
    conversation, reply = answered(user)
    fault = error(client.post("/v1/preferences", {**body(conversation, reply), **change}, format="json"), 400)
    assert fault["code"] == "validation_error" and field in fault["details"]
    assert not PreferenceEvent.objects.exists()


def test_nobody_can_rate_read_or_delete_another_users_messages_and_signals(api_client, login_tokens, make_user):
    alice, bob = make_user(), make_user()
    conversation, reply = answered(alice)
    event = PreferenceEvent.objects.create(owner=alice, message=reply, kind="thumbs_up", prompt="p", answer="a")
    client = as_user(api_client, login_tokens, bob)
    assert error(client.post("/v1/preferences", body(conversation, reply), format="json"), 404)["code"] == "not_found"
    error(client.post("/v1/preferences/routing_feedback", body(conversation, reply), format="json"), 404)
    error(client.get(f"/v1/preferences/{event.pk}"), 404)
    error(client.delete(f"/v1/preferences/{event.pk}"), 404)
    mine, my_reply = answered(bob)
    # Bob's message named with Alice's conversation: still not found, never cross-linked.
    error(client.post("/v1/preferences", body(conversation, my_reply), format="json"), 404)
    error(
        client.post(
            "/v1/preferences/pick",
            {"chosen_message_id": str(my_reply.pk), "rejected_message_id": str(reply.pk)},
            format="json",
        ),
        404,
    )
    assert client.get("/v1/preferences").json()["data"]["items"] == []
    assert client.get("/v1/preferences/insights").json()["data"]["totals"]["events"] == 0
    event.refresh_from_db()
    assert event.excluded_at is None


def test_deleting_a_signal_excludes_it_from_training_and_drops_its_words(api_client, login_tokens, make_user):
    user = make_user()
    client = as_user(api_client, login_tokens, user)
    conversation, reply = answered(user)
    created = client.post("/v1/preferences", body(conversation, reply, corrected_text="Lutz"), format="json")
    event_id = created.json()["data"]["id"]
    assert client.delete(f"/v1/preferences/{event_id}").json()["data"] == {"deleted": True, "id": event_id}
    event = PreferenceEvent.objects.get(pk=event_id)
    assert event.excluded_at is not None and not event.is_training_data
    assert event.correction == "" and event.prompt == "" and event.prompt_embedding is None
    assert client.get("/v1/preferences").json()["data"]["items"] == []
    error(client.delete(f"/v1/preferences/{event_id}"), 404)


def test_a_pair_from_regenerate_and_pick(api_client, login_tokens, make_user):
    user = make_user()
    client = as_user(api_client, login_tokens, user)
    conversation, first = answered(user)
    second = Message.objects.create(
        conversation=conversation, owner=user, parent=first.parent, role="assistant", content="Lutz, surely."
    )
    response = client.post(
        "/v1/preferences/pick",
        {"chosen_message_id": str(second.pk), "rejected_message_id": str(first.pk)},
        format="json",
    )
    assert response.status_code == 201
    pair = PreferenceEvent.objects.get(pk=response.json()["data"]["id"])
    assert (pair.kind, pair.answer, pair.rejected_answer) == ("pick", "Lutz, surely.", "Zubrowka City.")
    unrelated_conversation, unrelated = answered(user, question="Other?")
    fault = error(
        client.post(
            "/v1/preferences/pick",
            {"chosen_message_id": str(second.pk), "rejected_message_id": str(unrelated.pk)},
            format="json",
        ),
        400,
    )
    assert "rejected_message_id" in fault["details"]


def test_the_rate_limit_answers_429_with_retry_after(api_client, login_tokens, make_user, settings):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "preferences_user": (3, 60)}
    user = make_user()
    client = as_user(api_client, login_tokens, user)
    conversation, reply = answered(user)
    statuses = [
        client.post("/v1/preferences", body(conversation, reply, feedback="neutral"), format="json").status_code
        for _ in range(4)
    ]
    assert statuses == [201, 201, 201, 429]
    limited = client.post("/v1/preferences", body(conversation, reply), format="json")
    assert error(limited, 429)["code"] == "rate_limited" and int(limited["Retry-After"]) >= 1


def test_memory_crud_and_isolation(api_client, login_tokens, make_user):
    alice, bob = make_user(), make_user()
    client = as_user(api_client, login_tokens, alice)
    created = client.post("/v1/memory", {"text": "I use Fedora"}, format="json")
    assert created.status_code == 201
    item = created.json()["data"]
    assert item["text"] == "I use Fedora" and item["pinned"] is False
    pinned = client.patch(f"/v1/memory/{item['id']}", {"pinned": True, "text": "I use Fedora 41"}, format="json")
    assert pinned.json()["data"]["pinned"] is True and pinned.json()["data"]["text"] == "I use Fedora 41"
    assert [i["id"] for i in client.get("/v1/memory").json()["data"]["items"]] == [item["id"]]
    for bad, field in [({"text": ""}, "text"), ({"text": "x" * 2001}, "text"), ({"text": "a\x00"}, "text")]:
        assert field in error(client.post("/v1/memory", bad, format="json"), 400)["details"]
    assert "text" in error(client.patch(f"/v1/memory/{item['id']}", {}, format="json"), 400)["details"]

    other = as_user(api_client.__class__(), login_tokens, bob)
    for response in (
        other.get(f"/v1/memory/{item['id']}"),
        other.patch(f"/v1/memory/{item['id']}", {"pinned": False}, format="json"),
        other.delete(f"/v1/memory/{item['id']}"),
    ):
        assert error(response, 404)["code"] == "not_found"
    assert other.get("/v1/memory").json()["data"]["items"] == []

    assert client.delete(f"/v1/memory/{item['id']}").json()["data"]["deleted"] is True
    assert not MemoryItem.objects.exists()
    assert training_selectors.memory_list(actor=alice).count() == 0
