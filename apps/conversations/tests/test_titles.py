"""Conversation titles are data: the real SmolLM2 completes the `title_prompt` of the workflow that
answers the conversation. An edit of the global workflow changes the next title; a conversation
on a user's own workflow is titled by that workflow's prompt, and nobody else's is."""

import copy

import pytest

from apps.artifacts import seeds
from apps.artifacts import services as artifact_services
from apps.artifacts.selectors import global_artifact
from apps.conversations import generation
from apps.conversations.models import Conversation, Message

pytestmark = [pytest.mark.slow, pytest.mark.django_db]

QUESTION = "My bicycle has a flat tyre. How do I fix it?"
ANSWER = "Take the wheel off, find the hole in the inner tube, patch it and pump the tyre up again."
# The seeded few-shot examples, with every title in capitals.
SHOUTED = (
    "Give each conversation a short title in capital letters.\n\n"
    "User: How long should I boil an egg for a runny yolk?\nAssistant: About six minutes in boiling water.\n"
    "Title: SOFT-BOILED EGGS\n\n"
    "User: Can you fix this SQL query that returns duplicate rows?\nAssistant: Add DISTINCT or a GROUP BY.\n"
    "Title: REMOVING DUPLICATE SQL ROWS\n\n"
    "User: Recommend a novel set in Japan.\nAssistant: Try 'Kafka on the Shore' by Haruki Murakami.\n"
    "Title: JAPANESE NOVEL RECOMMENDATION\n\n"
    "User: {question}\nAssistant: {answer}\nTitle:"
)


@pytest.fixture(scope="module")
def small_engine():
    from workers.llm import load_engine

    engine = load_engine(max_batch_slots=2, max_seq_len=512)
    yield engine
    engine.shutdown()


@pytest.fixture(autouse=True)
def engine_in_process(monkeypatch, small_engine):
    monkeypatch.setattr(generation, "get_engine", lambda: small_engine)


def _exchange(user, workflow=None) -> Conversation:
    conversation = Conversation.objects.create(owner=user, workflow=workflow)
    question = Message.objects.create(conversation=conversation, owner=user, role="user", content=QUESTION)
    Message.objects.create(conversation=conversation, owner=user, parent=question, role="assistant", content=ANSWER)
    return conversation


def _workflow_with_title_prompt(prompt: str) -> dict:
    body = copy.deepcopy(seeds.WORKFLOW)
    body["defaults"]["title_prompt"] = prompt
    return body


def test_the_seeded_prompt_names_the_exchange_and_an_edit_changes_the_next_title(make_user):
    user = make_user()
    seeded = generation.run_title(_exchange(user))
    assert seeded and not seeded.isupper(), seeded
    assert any(word in seeded.lower() for word in ("tyre", "tire", "bicycle", "bike", "puncture")), seeded

    workflow = global_artifact(kind="workflow.chat", name=seeds.DEFAULT_WORKFLOW)
    artifact_services.artifact_update(
        actor=None, artifact=workflow, body=_workflow_with_title_prompt(SHOUTED), change_note="Titles in capitals."
    )
    shouted = generation.run_title(_exchange(user))
    assert shouted and shouted.isupper(), shouted


def test_a_users_own_workflow_titles_their_conversation_and_no_one_elses(make_user):
    owner, other = make_user(), make_user()
    mine = artifact_services.artifact_create(
        actor=owner, name="shouting", body=_workflow_with_title_prompt(SHOUTED), description="Capital titles."
    )
    assert generation.run_title(_exchange(owner, workflow=mine)).isupper()
    assert not generation.run_title(_exchange(owner)).isupper(), "the owner's other chats keep the default"
    # A conversation pointing at a workflow its owner cannot see falls back to the global default.
    assert not generation.run_title(_exchange(other, workflow=mine)).isupper()


def test_a_workflow_edited_before_titles_were_data_titles_with_the_seeded_prompt(make_user):
    user = make_user()
    body = copy.deepcopy(seeds.WORKFLOW)
    del body["defaults"]["title_prompt"]
    older = artifact_services.artifact_create(actor=user, name="older", body=body)
    conversation = _exchange(user, workflow=older)
    assert generation.title_prompt(conversation) == seeds.WORKFLOW["defaults"]["title_prompt"]
