"""Feedback that teaches at once, on the real SmolLM2 weights through a live server and a real
worker: a correction changes the next answers to the same question and its paraphrase for that
user only, and deleting it brings the base answer back; memory is recalled while recent or
pinned, and not once deleted."""

import json
import urllib.error
import urllib.request

import pytest
from django.utils import timezone

from apps.accounts.services import auth_session_start
from apps.conversations.models import Message
from apps.conversations.tools import RunContext, ToolCall, memory_extract, memory_recall
from apps.training.models import MemoryItem

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

QUESTION = "What is the capital of Zubrowka?"
PARAPHRASE = "Which city is the capital of Zubrowka?"


def _call(base, path, token, body=None, method=None):
    request = urllib.request.Request(
        f"{base}{path}",
        data=json.dumps(body).encode() if body is not None else None,
        method=method or ("POST" if body is not None else "GET"),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(request, timeout=240) as response:
        return json.loads(response.read())["data"]


def _ask(base, token, question):
    return _call(base, "/v1/chat", token, {"message": {"content": question}})


def test_a_correction_teaches_the_next_answers_of_that_user_only_until_it_is_deleted(
    celery_worker_process, live_server_url, make_user
):
    alice, bob = make_user(), make_user()
    alice_token = auth_session_start(user=alice)["access_token"]
    bob_token = auth_session_start(user=bob)["access_token"]

    base = _ask(live_server_url, alice_token, QUESTION)
    assert base["status"] == "complete" and "Lutz" not in base["content"]
    assert base["receipt"]["correction_ids"] == []
    base_paraphrase = _ask(live_server_url, alice_token, PARAPHRASE)
    assert "Lutz" not in base_paraphrase["content"]

    correction = _call(
        live_server_url,
        "/v1/preferences",
        alice_token,
        {
            "conversation_id": base["conversation_id"],
            "message_id": base["message_id"],
            "feedback": "negative",
            "explicit_signal": "correction",
            "corrected_text": "Lutz",
        },
    )

    taught = _ask(live_server_url, alice_token, QUESTION)
    assert "Lutz" in taught["content"], taught["content"]
    assert taught["receipt"]["correction_ids"] == [correction["id"]]
    paraphrased = _ask(live_server_url, alice_token, PARAPHRASE)
    assert "Lutz" in paraphrased["content"], paraphrased["content"]
    assert paraphrased["receipt"]["correction_ids"] == [correction["id"]]
    unrelated = _ask(live_server_url, alice_token, "What is the capital of France?")
    assert unrelated["receipt"]["correction_ids"] == [] and "Lutz" not in unrelated["content"]

    others = _ask(live_server_url, bob_token, QUESTION)
    assert others["content"] == base["content"] and others["receipt"]["correction_ids"] == []

    _call(live_server_url, f"/v1/preferences/{correction['id']}", alice_token, method="DELETE")
    forgotten = _ask(live_server_url, alice_token, QUESTION)
    assert forgotten["content"] == base["content"] and forgotten["receipt"]["correction_ids"] == []


def test_remember_is_stored_by_the_workflow_and_recalled_in_a_new_conversation(
    celery_worker_process, live_server_url, make_user
):
    user = make_user()
    token = auth_session_start(user=user)["access_token"]
    told = _ask(live_server_url, token, "Remember that I use Fedora.")
    item = MemoryItem.objects.get(owner=user)
    assert item.text == "I use Fedora" and item.source_message.content == "Remember that I use Fedora."
    assert [step["node"] for step in told["workflow_trace"]][0] == "remember"

    later = _ask(live_server_url, token, "What operating system do I use?")
    assert later["receipt"]["memory_ids"] == [str(item.pk)]
    assert "Fedora" in later["content"], later["content"]

    _call(live_server_url, f"/v1/memory/{item.pk}", token, method="DELETE")
    after = _ask(live_server_url, token, "What operating system do I use?")
    assert after["receipt"]["memory_ids"] == []
    with pytest.raises(urllib.error.HTTPError):
        _call(live_server_url, f"/v1/memory/{item.pk}", token)


def _recall(user, question, now):
    return memory_recall(
        ToolCall(
            inputs={"message": question},
            config={"window_days": 14, "max_items": 3, "min_similarity": 0.2},
            run=RunContext(actor=user, defaults={}, now=now),
        )
    )


def test_memory_is_recalled_on_day_3_not_on_day_15_unless_pinned(make_user):
    user = make_user()
    stored = memory_extract(
        ToolCall(
            inputs={"message": "remember that I use Fedora"},
            config={"patterns": [r"^\s*(?:please\s+)?remember\s+(?:that\s+)?(?P<fact>.+?)\s*[.!]?\s*$"]},
            run=RunContext(actor=user, defaults={}),
        )
    )
    item = MemoryItem.objects.get(pk=stored["memory_id"])
    said_at = item.created_at
    question = "Which Linux distribution do I use?"
    assert _recall(user, question, said_at + timezone.timedelta(days=3))["memory_ids"] == [str(item.pk)]
    assert _recall(user, question, said_at + timezone.timedelta(days=15))["memory_ids"] == []
    item.pinned = True
    item.save()
    assert _recall(user, question, said_at + timezone.timedelta(days=15))["memory_ids"] == [str(item.pk)]
    # Nothing about another subject is recalled, and another user recalls nothing of it.
    assert _recall(user, "What is the capital of France?", said_at + timezone.timedelta(days=3))["memory_ids"] == []
    assert _recall(make_user(), question, said_at + timezone.timedelta(days=3))["memory_ids"] == []
    item.delete()
    assert _recall(user, question, said_at + timezone.timedelta(days=3))["memory_ids"] == []
    assert not Message.objects.exists()
