import asyncio

import pytest
from channels.testing import WebsocketCommunicator
from django.test import Client

from apps.accounts.consumers import CLOSE_UNAUTHENTICATED, user_event_send
from liminal.asgi import application

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


def session_cookie_for(user) -> bytes:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


def communicator(cookie: bytes | None = None, origin: bytes = b"http://localhost"):
    headers = [(b"origin", origin), (b"host", b"localhost")]
    if cookie:
        headers.append((b"cookie", cookie))
    return WebsocketCommunicator(application, "/ws/events/", headers=headers)


async def test_events_round_trip_through_the_redis_channel_layer(make_user):
    from asgiref.sync import sync_to_async

    user = await sync_to_async(make_user)()
    ws = communicator(await sync_to_async(session_cookie_for)(user))
    connected, _ = await ws.connect()
    assert connected
    await ws.send_json_to({"type": "ping"})
    assert await ws.receive_json_from() == {"type": "pong"}
    # Sent the way a worker process would: through channels-redis, addressed by user id.
    await asyncio.to_thread(user_event_send, user_id=user.id, event="job.progress", data={"done": 3})
    assert await ws.receive_json_from(timeout=5) == {"type": "event", "event": "job.progress", "data": {"done": 3}}
    await ws.disconnect()


async def test_events_of_one_user_never_reach_another(make_user):
    from asgiref.sync import sync_to_async

    alice, bob = await sync_to_async(make_user)(), await sync_to_async(make_user)()
    ws = communicator(await sync_to_async(session_cookie_for)(bob))
    assert (await ws.connect())[0]
    await asyncio.to_thread(user_event_send, user_id=alice.id, event="secret", data={"x": 1})
    assert await ws.receive_nothing(timeout=0.5)
    await ws.disconnect()


async def test_anonymous_socket_is_closed():
    ws = communicator()
    connected, code = await ws.connect()
    assert not connected
    assert code == CLOSE_UNAUTHENTICATED


async def test_foreign_origin_is_rejected(make_user):
    from asgiref.sync import sync_to_async

    user = await sync_to_async(make_user)()
    ws = communicator(await sync_to_async(session_cookie_for)(user), origin=b"http://evil.example")
    connected, _ = await ws.connect()
    assert not connected


async def test_malformed_frames_get_an_error_and_the_socket_survives(make_user):
    from asgiref.sync import sync_to_async

    user = await sync_to_async(make_user)()
    ws = communicator(await sync_to_async(session_cookie_for)(user))
    assert (await ws.connect())[0]
    for frame in ("{not json", '["a list"]', '{"type": "launch-missiles"}'):
        await ws.send_to(text_data=frame)
        reply = await ws.receive_json_from()
        assert reply["type"] == "error" and reply["error"]["code"] == "validation_error"
    await ws.send_json_to({"type": "ping"})
    assert await ws.receive_json_from() == {"type": "pong"}
    await ws.disconnect()
