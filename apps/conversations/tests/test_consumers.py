"""Consumers over the real Redis channel layer, without a model: the worker's side is simulated
by publishing the events a worker publishes."""

import asyncio
import json

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client

from apps.conversations.models import Conversation, Message
from apps.conversations.streaming import publish
from liminal.asgi import application

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


@pytest.fixture(autouse=True)
def no_real_worker(monkeypatch):
    """These tests play the worker themselves; a real worker running in the session must not
    also answer their messages."""
    from apps.conversations import tasks

    queued = []
    monkeypatch.setattr(tasks.generate_reply, "delay", lambda *args: queued.append(args))
    return queued


def _cookie(user) -> bytes:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


async def ui_socket(user=None, path="/ws/chat/"):
    headers = [(b"origin", b"http://localhost"), (b"host", b"localhost")]
    if user is not None:
        headers.append((b"cookie", await sync_to_async(_cookie)(user)))
    ws = WebsocketCommunicator(application, path, headers=headers)
    connected, code = await ws.connect()
    return ws, connected, code


async def test_ui_socket_requires_login():
    _, connected, code = await ui_socket()
    assert not connected and code == 4401


async def test_ui_send_renders_messages_and_streams_escaped_tokens(make_user):
    user = await sync_to_async(make_user)()
    ws, connected, _ = await ui_socket(user)
    assert connected
    await ws.send_to(text_data=json.dumps({"action": "send", "content": "Hello <b>there</b>", "conversation_id": ""}))
    html = await ws.receive_from(timeout=5)
    assert "Hello &lt;b&gt;there&lt;/b&gt;" in html and 'hx-swap-oob="beforeend"' in html
    assert 'id="conversation-list-empty" hx-swap-oob="delete"' in html
    assert '<div hx-swap-oob="afterbegin:#conversation-list"><div class="conv-item active"' in html
    answer = await sync_to_async(Message.objects.get)(role="assistant")
    assert f'id="stream-{answer.pk}"' in html and "stop-btn" in html
    # What the inference worker would publish: a token with markup in it.
    await asyncio.to_thread(publish, answer.stream_key, {"type": "gen.token", "text": "<script>alert(1)</script>"})
    token_html = await ws.receive_from(timeout=5)
    assert "<script>" not in token_html
    assert (
        f'<span id="stream-{answer.pk}" hx-swap-oob="beforeend">&lt;script&gt;alert(1)&lt;/script&gt;</span>'
        == token_html
    )
    await ws.disconnect()


async def test_ui_rejects_bad_frames_and_others_conversations(make_user):
    alice, bob = await sync_to_async(make_user)(), await sync_to_async(make_user)()
    conversation = await sync_to_async(Conversation.objects.create)(owner=alice, title="private")
    ws, connected, _ = await ui_socket(bob)
    assert connected
    for frame, expected in [
        ("{broken", "not understood"),
        (json.dumps({"action": "fly"}), "Unknown action"),
        (json.dumps({"action": "send", "content": ""}), "empty"),
        (
            json.dumps({"action": "send", "content": "x", "conversation_id": str(conversation.pk)}),
            "Conversation not found",
        ),
        (json.dumps({"action": "stop", "message_id": "00000000-0000-0000-0000-000000000000"}), "Message not found"),
    ]:
        await ws.send_to(text_data=frame)
        reply = await ws.receive_from(timeout=5)
        assert 'id="notices"' in reply and expected in reply, reply
    assert await sync_to_async(Message.objects.count)() == 0
    await ws.disconnect()


async def api_socket():
    ws = WebsocketCommunicator(
        application, "/v1/chat/stream", headers=[(b"origin", b"http://localhost"), (b"host", b"localhost")]
    )
    connected, _ = await ws.connect()
    assert connected
    return ws


async def test_api_socket_requires_a_valid_token_in_the_first_frame():
    ws = await api_socket()
    await ws.send_json_to({"access_token": "lat_nope", "message": "hi"})
    frame = await ws.receive_json_from()
    assert frame["event"] == "error" and frame["data"]["code"] == "unauthorized"
    assert (await ws.receive_output())["type"] == "websocket.close"


async def test_api_socket_malformed_and_invalid_first_frames(make_user, login_tokens):
    user = await sync_to_async(make_user)()
    tokens = await sync_to_async(login_tokens)(user)
    ws = await api_socket()
    await ws.send_to(text_data="not json")
    assert (await ws.receive_json_from())["data"]["code"] == "validation_error"
    ws = await api_socket()
    await ws.send_json_to({"access_token": tokens["access_token"], "message": {"content": ""}})
    frame = await ws.receive_json_from()
    assert frame["event"] == "error" and frame["data"]["code"] == "validation_error"
    ws = await api_socket()
    await ws.send_json_to(
        {
            "access_token": tokens["access_token"],
            "message": "hi",
            "conversation_id": "00000000-0000-0000-0000-000000000000",
        }
    )
    assert (await ws.receive_json_from())["data"]["code"] == "not_found"
    assert await sync_to_async(Message.objects.count)() == 0


async def _stored_answer(timeout: float = 10.0, **filters):
    """The turn's answer once the consumer has stored it (a loaded machine takes longer than a
    fixed sleep allows)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        answer = await sync_to_async(Message.objects.filter(role="assistant", **filters).first)()
        if answer is not None or asyncio.get_running_loop().time() > deadline:
            assert answer is not None, "the answer was not stored"
            return answer
        await asyncio.sleep(0.05)


async def test_api_socket_streams_tokens_cancel_ack_and_one_message_done(make_user, login_tokens):
    user = await sync_to_async(make_user)()
    tokens = await sync_to_async(login_tokens)(user)
    ws = await api_socket()
    await ws.send_json_to({"access_token": tokens["access_token"], "message": {"content": "hi"}, "request_id": "req-1"})
    answer = await _stored_answer()
    assert answer.request_id == "req-1"
    await asyncio.to_thread(publish, answer.stream_key, {"type": "gen.token", "text": "Hel"})
    assert await ws.receive_json_from() == {"event": "token", "data": "Hel", "request_id": "req-1"}
    await ws.send_json_to({"action": "cancel"})
    ack = await ws.receive_json_from()
    assert ack["event"] == "cancel_ack" and ack["data"]["cancelled"] is True
    done = await ws.receive_json_from()
    assert done["event"] == "message_done" and done["data"]["status"] == "cancelled"
    # A second done event (e.g. a late worker) must not produce a second message_done.
    await asyncio.to_thread(
        publish,
        answer.stream_key,
        {"type": "gen.done", "message_id": str(answer.pk), "status": "complete", "error": ""},
    )
    assert (await ws.receive_output(timeout=2))["type"] == "websocket.close"


def _own_workflow(user, name):
    from apps.artifacts import services as artifact_services
    from apps.artifacts.seeds import WORKFLOW

    return artifact_services.artifact_create(actor=user, name=name, body=WORKFLOW)


async def test_ui_send_runs_the_picked_workflow_and_refuses_someone_elses(make_user):
    alice, bob = await sync_to_async(make_user)(), await sync_to_async(make_user)()
    mine = await sync_to_async(_own_workflow)(alice, "mine")
    theirs = await sync_to_async(_own_workflow)(bob, "theirs")
    ws, connected, _ = await ui_socket(alice)
    assert connected
    await ws.send_to(text_data=json.dumps({"action": "send", "content": "hi", "workflow_id": str(theirs.pk)}))
    assert "Artifact not found" in await ws.receive_from(timeout=5)
    assert await sync_to_async(Message.objects.count)() == 0

    await ws.send_to(text_data=json.dumps({"action": "send", "content": "hi", "workflow_id": str(mine.pk)}))
    await ws.receive_from(timeout=5)
    answer = await sync_to_async(Message.objects.select_related("workflow_version", "conversation").get)(
        role="assistant"
    )
    assert answer.workflow_version.artifact_id == mine.pk and answer.conversation.workflow_id == mine.pk
    await ws.disconnect()


async def test_the_chat_page_offers_a_workflow_picker_once_there_is_a_choice(make_user):
    user = await sync_to_async(make_user)()

    def page():
        client = Client()
        client.force_login(user)
        return client.get("/").content.decode()

    assert 'name="workflow_id"' not in await sync_to_async(page)()
    mine = await sync_to_async(_own_workflow)(user, "Terse answers")
    html = await sync_to_async(page)()
    assert 'name="workflow_id" form="composer"' in html and f'value="{mine.pk}"' in html
    assert "Terse answers (yours)" in html


async def test_malformed_frames_get_an_error_and_the_sockets_stay_usable(make_user, login_tokens):
    user = await sync_to_async(make_user)()
    ws, connected, _ = await ui_socket(user)
    assert connected
    deep = '{"a": ' * 5000 + "1" + "}" * 5000
    for frame in (deep, json.dumps({"action": "stop", "message_id": "zzz"}), json.dumps({"action": "regenerate"})):
        await ws.send_to(text_data=frame)
        assert 'id="notices"' in await ws.receive_from(timeout=5)
    await ws.send_to(text_data=json.dumps({"action": "send", "content": "still here"}))
    assert "still here" in await ws.receive_from(timeout=5)
    await ws.disconnect()

    tokens = await sync_to_async(login_tokens)(user)
    api = await api_socket()
    for frame, field in [
        ({"access_token": tokens["access_token"], "message": "hi", "conversation_id": "zzz"}, "conversation_id"),
        ({"access_token": tokens["access_token"], "message": "hi", "context_id": {"x": 1}}, "context_id"),
        ({"access_token": tokens["access_token"], "message": {"content": ""}}, "content"),
    ]:
        await api.send_json_to(frame)
        error = await api.receive_json_from(timeout=5)
        assert error["event"] == "error" and field in error["data"]["details"], error
    await api.send_to(text_data=deep)
    assert (await api.receive_json_from(timeout=5))["data"]["code"] == "validation_error"
    await api.send_json_to({"access_token": tokens["access_token"], "message": {"content": "now valid"}})
    answer = await _stored_answer(parent__content="now valid")
    assert answer.owner_id == user.pk
    await api.disconnect()
