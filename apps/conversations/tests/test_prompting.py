"""Prompt building on the real SmolLM2 engine, with a deliberately small context window."""

import pytest

from apps.accounts.ratelimit import state_redis
from apps.conversations.models import Conversation, Message
from apps.conversations.prompting import build_reply_prompt

PROMPTS = {"system_prompt": "You are a test assistant.", "summary_prompt": "Summarise the conversation."}

pytestmark = [pytest.mark.slow, pytest.mark.django_db]


@pytest.fixture(scope="module")
def small_engine():
    from workers.llm import load_engine

    engine = load_engine(max_batch_slots=2, max_seq_len=512)
    yield engine
    engine.shutdown()


def _conversation(user, turns):
    conversation = Conversation.objects.create(owner=user)
    parent = None
    for question, answer in turns:
        parent = Message.objects.create(
            conversation=conversation, owner=user, parent=parent, role="user", content=question
        )
        parent = Message.objects.create(
            conversation=conversation, owner=user, parent=parent, role="assistant", content=answer
        )
    last = Message.objects.create(
        conversation=conversation, owner=user, parent=parent, role="user", content="And my name?"
    )
    reply = Message.objects.create(
        conversation=conversation, owner=user, parent=last, role="assistant", status="queued"
    )
    return conversation, reply


def test_a_short_conversation_is_sent_whole(make_user, small_engine):
    conversation, reply = _conversation(make_user(), [("Hi, I am Ada.", "Hello Ada!")])
    prompt = build_reply_prompt(small_engine, assistant=reply, max_tokens=64, **PROMPTS)
    assert prompt.summarised_through is None
    assert "I am Ada" in prompt.text and "And my name?" in prompt.text
    assert prompt.token_count == len(small_engine.tokenizer.encode(prompt.text))


def test_older_turns_are_summarised_not_dropped(make_user, small_engine):
    filler = "The weather report mentioned clouds, wind and a chance of rain over the hills. " * 6
    turns = [("My name is Ada Lovelace and I write programs for the Analytical Engine.", "Nice to meet you, Ada.")]
    turns += [(f"Question {i}: {filler}", f"Answer {i}: {filler}") for i in range(6)]
    conversation, reply = _conversation(make_user(), turns)

    prompt = build_reply_prompt(small_engine, assistant=reply, max_tokens=64, **PROMPTS)

    assert prompt.token_count <= small_engine.context_length - 64
    assert "And my name?" in prompt.text  # the newest turn always stays verbatim
    assert "Summary of the earlier conversation" in prompt.text
    assert "My name is Ada Lovelace" not in prompt.text  # the oldest turn went into the summary
    conversation.refresh_from_db()
    assert conversation.summary and str(conversation.summary_through_id) == prompt.summarised_through
    assert conversation.summary in prompt.text
    assert (
        state_redis().get(f"summary:{conversation.pk}:{conversation.summary_through_id}").decode()
        == conversation.summary
    )

    again = build_reply_prompt(small_engine, assistant=reply, max_tokens=64, **PROMPTS)
    assert again.text == prompt.text  # the stored summary is reused, not regenerated


def test_a_first_message_over_the_budget_goes_as_it_is(make_user, small_engine):
    user = make_user()
    conversation = Conversation.objects.create(owner=user)
    question = Message.objects.create(
        conversation=conversation, owner=user, role="user", content="Tell me about clouds. " * 80
    )
    reply = Message.objects.create(
        conversation=conversation, owner=user, parent=question, role="assistant", status="queued"
    )
    prompt = build_reply_prompt(small_engine, assistant=reply, max_tokens=300, **PROMPTS)
    assert prompt.summarised_through is None
    assert prompt.token_count > small_engine.context_length - 300  # over: the engine truncates
    assert "Tell me about clouds." in prompt.text
