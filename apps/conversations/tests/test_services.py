import pytest
from django.utils import timezone
from rest_framework.exceptions import ValidationError

from apps.conversations import selectors, services, state
from apps.conversations.models import Conversation, Message
from apps.training.models import PreferenceEvent
from liminal.api import Conflict

pytestmark = pytest.mark.django_db


def finish(message, content="An answer."):
    services.generation_finish(
        message=message, content=content, status=Message.Status.COMPLETE, receipt={"finish_reason": "stop"}
    )
    message.refresh_from_db()
    return message


@pytest.mark.parametrize("content", ["", "   \n ", None, 42])
def test_empty_or_non_text_message_is_rejected_and_nothing_is_saved(make_user, content):
    user = make_user()
    with pytest.raises(ValidationError):
        services.chat_turn_start(actor=user, content=content)
    assert not Conversation.objects.exists() and not Message.objects.exists()


def test_oversize_message_is_rejected(make_user, settings):
    settings.CHAT_MAX_MESSAGE_CHARS = 100
    with pytest.raises(ValidationError, match="too long"):
        services.chat_turn_start(actor=make_user(), content="x" * 101)
    assert not Message.objects.exists()


def test_turn_creates_conversation_user_message_and_queued_answer(make_user):
    user = make_user()
    conversation, question, answer = services.chat_turn_start(actor=user, content="  Hello  ")
    assert question.content == "Hello" and question.parent is None
    assert answer.parent == question and answer.status == Message.Status.QUEUED and answer.request_id
    conversation.refresh_from_db()
    assert conversation.current_leaf == answer and conversation.owner == user


def test_next_turn_continues_the_branch_but_not_while_answering(make_user):
    user = make_user()
    conversation, _, answer = services.chat_turn_start(actor=user, content="one")
    with pytest.raises(Conflict):
        services.chat_turn_start(actor=user, content="two", conversation=conversation)
    finish(answer)
    _, second, _ = services.chat_turn_start(actor=user, content="two", conversation=conversation)
    assert second.parent == answer


def test_regenerate_makes_a_sibling_and_navigation_switches_branches(make_user):
    user = make_user()
    conversation, question, first = services.chat_turn_start(actor=user, content="hi")
    finish(first, "first answer")
    second = services.chat_regenerate(actor=user, message=first)
    assert second.generation_params["greedy"] is False, "a regenerated answer is sampled, not the greedy one again"
    assert second.parent == question and second.pk != first.pk
    conversation.refresh_from_db()
    path = selectors.conversation_path(conversation=conversation)
    assert [e.message.pk for e in path] == [question.pk, second.pk]
    assert (path[1].sibling_index, path[1].sibling_count) == (2, 2)
    assert path[1].previous_sibling_id == str(first.pk)
    finish(second, "second answer")
    services.branch_select(actor=user, message=first)
    conversation.refresh_from_db()
    path = selectors.conversation_path(conversation=conversation)
    assert path[1].message.pk == first.pk and path[1].sibling_index == 1


def test_edit_makes_a_user_sibling_with_its_own_answer(make_user):
    user = make_user()
    conversation, question, answer = services.chat_turn_start(actor=user, content="What is 2+2?")
    finish(answer)
    edited, new_answer = services.chat_edit(actor=user, message=question, content="What is 3+3?")
    assert edited.parent is None and new_answer.parent == edited
    conversation.refresh_from_db()
    path = selectors.conversation_path(conversation=conversation)
    assert [e.message.content for e in path][0] == "What is 3+3?"
    assert path[0].sibling_count == 2
    with pytest.raises(ValidationError):
        services.chat_edit(actor=user, message=new_answer, content="answers cannot be edited")


def test_concurrent_generation_limit_is_409_and_frees_on_finish(make_user, settings):
    settings.CHAT_MAX_CONCURRENT_PER_USER = 2
    user = make_user()
    answers = [services.chat_turn_start(actor=user, content=f"q{i}")[2] for i in range(2)]
    with pytest.raises(state.Busy) as busy:
        services.chat_turn_start(actor=user, content="one too many")
    assert busy.value.status_code == 409
    finish(answers[0])
    services.chat_turn_start(actor=user, content="now there is room")


def test_cancelling_a_queued_answer_settles_it(make_user):
    user = make_user()
    _, _, answer = services.chat_turn_start(actor=user, content="hi")
    assert services.generation_cancel(actor=user, message=answer)
    answer.refresh_from_db()
    assert answer.status == Message.Status.CANCELLED
    assert state.cancel_requested(answer.stream_key)


def test_reaper_fails_answers_whose_worker_died(make_user, settings):
    user = make_user()
    _, _, answer = services.chat_turn_start(actor=user, content="hi")
    assert services.generation_started(message=answer)
    assert services.generations_reap_stalled() == 0  # heartbeat is fresh
    state.state_redis().delete(state.heartbeat_key(answer.pk))
    assert services.generations_reap_stalled() == 1
    answer.refresh_from_db()
    assert answer.status == Message.Status.FAILED and "retry" in answer.error.lower()
    services.chat_regenerate(actor=user, message=answer)  # the user can retry


def test_reaper_fails_answers_no_worker_picked_up(make_user, settings):
    settings.GENERATION_QUEUE_TIMEOUT = 60
    user = make_user()
    _, _, answer = services.chat_turn_start(actor=user, content="hi")
    Message.objects.filter(pk=answer.pk).update(created_at=timezone.now() - timezone.timedelta(seconds=120))
    assert services.generations_reap_stalled() == 1
    answer.refresh_from_db()
    assert answer.status == Message.Status.FAILED and "No inference worker" in answer.error


def test_thumbs_are_preference_events_with_the_receipt(make_user):
    user = make_user()
    _, question, answer = services.chat_turn_start(actor=user, content="Capital of France?")
    services.generation_finish(
        message=answer,
        content="Paris.",
        status=Message.Status.COMPLETE,
        receipt={"model": "m", "finish_reason": "stop"},
    )
    answer.refresh_from_db()
    services.message_thumb(actor=user, message=answer, kind="thumbs_up")
    services.message_thumb(actor=user, message=answer, kind="thumbs_down")
    events = list(PreferenceEvent.objects.filter(owner=user))
    assert len(events) == 1
    assert (events[0].kind, events[0].prompt, events[0].answer, events[0].receipt["model"]) == (
        "thumbs_down",
        "Capital of France?",
        "Paris.",
        "m",
    )
    services.message_thumb(actor=user, message=answer, kind=None)
    assert not PreferenceEvent.objects.exists()


def test_search_finds_titles_and_content_of_own_conversations_only(make_user):
    alice, bob = make_user(), make_user()
    conversation, _, answer = services.chat_turn_start(actor=alice, content="Tell me about photosynthesis in plants")
    finish(answer)
    services.conversation_rename(actor=alice, conversation=conversation, title="Biology homework")
    other, _, bob_answer = services.chat_turn_start(actor=bob, content="photosynthesis again")
    assert list(selectors.conversation_list(actor=alice, query="photosynthesis")) == [conversation]
    assert list(selectors.conversation_list(actor=alice, query="biology")) == [conversation]
    assert list(selectors.conversation_list(actor=alice, query="volcano")) == []
    assert list(selectors.conversation_list(actor=bob, query="biology")) == []


def test_generated_title_never_overwrites_a_users_title(make_user):
    user = make_user()
    conversation = services.conversation_create(actor=user)
    assert services.conversation_title_set(conversation=conversation, title="Trip planning")
    conversation.refresh_from_db()
    assert conversation.title == "Trip planning" and conversation.title_is_generated
    services.conversation_rename(actor=user, conversation=conversation, title="Mine")
    assert not services.conversation_title_set(conversation=conversation, title="Other")
