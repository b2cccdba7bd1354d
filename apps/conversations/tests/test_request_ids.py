"""A client's request_id is a label, never a key: one user cannot read, stop or double-count
another's answer by sending the same id, and a user's reused id is refused, not merged.
(Defects 1 and 2 of the reliability probe.)"""

import asyncio

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from apps.conversations import orchestrator, state
from apps.conversations.models import Message
from apps.conversations.streaming import publish
from liminal.asgi import application
from liminal.errors import Conflict


@pytest.fixture(autouse=True)
def no_real_worker(monkeypatch):
    """Nothing answers here: the tests publish what a worker would."""
    from apps.conversations import tasks

    monkeypatch.setattr(tasks.generate_reply, "delay", lambda *args: None)


def _start(user, request_id, content="hi"):
    return orchestrator.start_chat(
        actor=user, content=content, request_id=request_id, turn_id=orchestrator.new_turn_id()
    )


@pytest.mark.django_db
def test_the_same_request_id_from_two_users_names_two_separate_streams(make_user):
    alice, bob = make_user(), make_user()
    alices = _start(alice, "shared-1")
    bobs = _start(bob, "shared-1")
    assert alices.request_id == bobs.request_id == "shared-1"
    assert alices.assistant.stream_key != bobs.assistant.stream_key
    assert alices.assistant.stream_key == str(alices.assistant.pk)

    # Bob stopping "shared-1" stops his own answer and nothing of Alice's.
    message, cancelled = orchestrator.cancel(actor=bob, request_id="shared-1")
    assert message.pk == bobs.assistant.pk and cancelled
    assert not state.cancel_requested(alices.assistant.stream_key)
    alices.assistant.refresh_from_db()
    assert alices.assistant.status == Message.Status.QUEUED


@pytest.mark.django_db
def test_cancel_over_http_with_another_users_request_id_is_not_found(api_client, make_user, login_tokens):
    alice, bob = make_user(), make_user()
    alices = _start(alice, "alice-only")
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {login_tokens(bob)['access_token']}")
    response = api_client.post("/v1/chat/cancel", {"request_id": "alice-only"}, format="json")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    assert not state.cancel_requested(alices.assistant.stream_key)


@pytest.mark.django_db
def test_a_reused_request_id_is_refused_and_stores_nothing(make_user):
    alice = make_user()
    _start(alice, "once")
    before = Message.objects.count()
    with pytest.raises(Conflict):
        _start(alice, "once", content="again")
    assert Message.objects.count() == before


@pytest.mark.django_db
def test_repeating_one_request_id_cannot_bypass_the_concurrency_limit(make_user, settings):
    settings.CHAT_MAX_CONCURRENT_PER_USER = 3
    user = make_user()
    started, refused = 0, 0
    for _ in range(6):
        try:
            orchestrator.start_chat(
                actor=user,
                content="hi",
                conversation_id=None,
                request_id="same-id",
                turn_id=orchestrator.new_turn_id(),
            )
            started += 1
        except Conflict:
            refused += 1
    assert (started, refused) == (1, 5)
    assert state.state_redis().zcard(f"gen:active:{user.id}") == 1


@pytest.mark.django_db
def test_distinct_request_ids_still_meet_the_concurrency_limit(make_user, settings):
    settings.CHAT_MAX_CONCURRENT_PER_USER = 3
    user = make_user()
    outcomes = []
    for n in range(5):
        try:
            _start(user, f"id-{n}")
            outcomes.append("started")
        except state.Busy:
            outcomes.append("busy")
    assert outcomes == ["started"] * 3 + ["busy"] * 2
    assert Message.objects.filter(owner=user, role="assistant").count() == 3


async def _api_socket(token, request_id):
    ws = WebsocketCommunicator(
        application, "/v1/chat/stream", headers=[(b"origin", b"http://localhost"), (b"host", b"localhost")]
    )
    assert (await ws.connect())[0]
    await ws.send_json_to({"access_token": token, "message": {"content": "hi"}, "request_id": request_id})
    return ws


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_another_users_socket_with_my_request_id_gets_none_of_my_tokens(make_user, login_tokens):
    alice, bob = await sync_to_async(make_user)(), await sync_to_async(make_user)()
    alice_ws = await _api_socket((await sync_to_async(login_tokens)(alice))["access_token"], "r-1")
    bob_ws = await _api_socket((await sync_to_async(login_tokens)(bob))["access_token"], "r-1")
    await asyncio.sleep(0.3)
    alices = await sync_to_async(Message.objects.get)(owner=alice, role="assistant")
    bobs = await sync_to_async(Message.objects.get)(owner=bob, role="assistant")

    await asyncio.to_thread(publish, alices.stream_key, {"type": "gen.token", "text": "secret"})
    assert await alice_ws.receive_json_from(timeout=5) == {"event": "token", "data": "secret", "request_id": "r-1"}
    assert await bob_ws.receive_nothing(timeout=0.5)

    # Bob's cancel stops Bob's answer; Alice's stream goes on and is not ended.
    await bob_ws.send_json_to({"action": "cancel"})
    assert (await bob_ws.receive_json_from(timeout=5))["event"] == "cancel_ack"
    assert (await bob_ws.receive_json_from(timeout=5))["data"]["message_id"] == str(bobs.pk)
    assert await alice_ws.receive_nothing(timeout=0.5)
    assert not await sync_to_async(state.cancel_requested)(alices.stream_key)
    await alice_ws.disconnect()
    await bob_ws.disconnect()
