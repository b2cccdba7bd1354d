"""While Redis or PostgreSQL is down, the chat entry points (POST /v1/chat, /v1/chat/completions,
the /v1/chat/stream socket) and the DRF views answer 503 `unavailable` in the envelope with a
Retry-After, not 500 `server_error`: the outage is mapped where every error is mapped.

The outages are simulated in-process (a Redis client aimed at a port nobody listens on; the
database cursor refusing every statement, or only writes), so the shared servers stay up."""

from contextlib import contextmanager

import pytest
import redis
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from channels_redis.core import RedisChannelLayer
from django.conf import settings
from django.db import OperationalError
from django.db.backends.utils import CursorWrapper

from apps.accounts import ratelimit
from apps.conversations import orchestrator, services, tasks
from apps.conversations.models import Message
from liminal import infra

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def no_real_worker(monkeypatch):
    """Nothing here should reach a worker; a real one running in the session must not answer."""
    queued = []
    monkeypatch.setattr(tasks.generate_reply, "delay", lambda *args: queued.append(args))
    return queued


def _dead_redis_url() -> str:
    return f"redis://127.0.0.1:{infra._free_port()}/0"  # nothing listens there


@contextmanager
def state_redis_down():
    """Rate limits, generation slots and cancel flags live in this Redis database."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ratelimit, "_client", redis.Redis.from_url(_dead_redis_url(), socket_connect_timeout=2))
        yield


@contextmanager
def channel_layer_down():
    """The answer's stream: subscribed to before the turn starts."""
    layer = RedisChannelLayer(hosts=[{"address": _dead_redis_url(), "socket_connect_timeout": 2}])
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(orchestrator, "get_channel_layer", lambda: layer)
        yield


@contextmanager
def database_down(only_writes: bool = False):
    """Every statement (or only INSERT/UPDATE/DELETE) fails as an unreachable server does."""
    real_execute = CursorWrapper.execute

    def execute(self, sql, params=None):
        if not only_writes or sql.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE")):
            raise OperationalError('connection to server on socket "/tmp/.s.PGSQL.5432" failed: Connection refused')
        return real_execute(self, sql, params)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(CursorWrapper, "execute", execute)
        yield


OUTAGES = {
    "state-redis": state_redis_down,
    "channel-layer": channel_layer_down,
    "database": database_down,
    "database-writes": lambda: database_down(only_writes=True),
}
ENDPOINTS = {
    "/v1/chat": {"message": {"content": "Hello?"}},
    "/v1/chat/completions": {"model": settings.SERVED_MODEL_ID, "messages": [{"role": "user", "content": "Hello?"}]},
}


def assert_unavailable(response) -> dict:
    body = response.json()
    assert response.status_code == 503, body
    assert body["status"] == "error" and body["error"]["code"] == "unavailable" and body["error"]["message"], body
    assert "request_id" in body
    assert int(response["Retry-After"]) >= 1
    return body


@pytest.fixture
def client_of(api_client, login_tokens):
    def login(user):
        api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {login_tokens(user)['access_token']}")
        return api_client

    return login


@pytest.mark.parametrize("outage", OUTAGES)
@pytest.mark.parametrize("path", ENDPOINTS)
def test_the_chat_endpoints_answer_503_unavailable_during_an_outage(client_of, make_user, path, outage):
    client = client_of(make_user())
    with OUTAGES[outage]():
        response = client.post(path, ENDPOINTS[path], format="json")
    assert_unavailable(response)
    assert not Message.objects.filter(role=Message.Role.ASSISTANT).exists()


def test_the_chat_endpoint_starts_turns_again_once_redis_is_back(client_of, make_user, settings):
    client = client_of(make_user())
    with state_redis_down():
        assert_unavailable(client.post("/v1/chat", {"message": {"content": "Hello?"}}, format="json"))
    # Back: the turn starts. No worker answers here, so the wait ends (503) and stops the answer.
    settings.CHAT_API_TIMEOUT = 0.2
    response = client.post("/v1/chat", {"message": {"content": "Hello?"}}, format="json")
    assert assert_unavailable(response)["error"]["message"] == "The answer took too long; it was stopped."
    assert list(Message.objects.filter(role=Message.Role.ASSISTANT).values_list("status", flat=True)) == [
        Message.Status.CANCELLED
    ]


def test_drf_views_answer_503_unavailable_during_an_outage(client_of, make_user):
    user = make_user()
    client = client_of(user)
    _, _, answer = services.chat_turn_start(actor=user, content="hi")
    with database_down():
        assert_unavailable(client.get("/v1/conversations"))
    with state_redis_down():  # the cancel flag lives in Redis
        assert_unavailable(client.post("/v1/chat/cancel", {"request_id": answer.request_id}, format="json"))


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_the_chat_socket_answers_unavailable_when_redis_is_down_at_the_start(make_user, login_tokens):
    from liminal.asgi import application

    tokens = await sync_to_async(login_tokens)(await sync_to_async(make_user)())
    ws = WebsocketCommunicator(
        application, "/v1/chat/stream", headers=[(b"origin", b"http://localhost"), (b"host", b"localhost")]
    )
    connected, _ = await ws.connect()
    assert connected
    with state_redis_down():
        await ws.send_json_to({"access_token": tokens["access_token"], "message": "Hello?"})
        frame = await ws.receive_json_from(timeout=10)
    assert frame["event"] == "error" and frame["data"]["code"] == "unavailable", frame
    await ws.disconnect()


@pytest.mark.asyncio
async def test_a_stream_that_loses_redis_ends_with_an_unavailable_event(monkeypatch):
    stream = orchestrator.TurnStream(orchestrator.new_turn_id())

    async def unreachable(channel):
        raise redis.exceptions.ConnectionError("Connection closed by server.")

    stream.channel = "test!nobody"
    monkeypatch.setattr(stream.layer, "receive", unreachable)
    events = [event async for event in stream.events(timeout=5)]
    assert [event["event"] for event in events] == ["error"] and events[0]["code"] == "unavailable"


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_the_chat_socket_answers_unavailable_when_the_database_is_down_at_login(make_user, login_tokens):
    from liminal.asgi import application

    tokens = await sync_to_async(login_tokens)(await sync_to_async(make_user)())
    ws = WebsocketCommunicator(
        application, "/v1/chat/stream", headers=[(b"origin", b"http://localhost"), (b"host", b"localhost")]
    )
    connected, _ = await ws.connect()
    assert connected
    with database_down():  # the first frame's token is checked against the sessions table
        await ws.send_json_to({"access_token": tokens["access_token"], "message": "Hello?"})
        frame = await ws.receive_json_from(timeout=10)
    assert frame["event"] == "error" and frame["data"]["code"] == "unavailable", frame
    await ws.disconnect()
