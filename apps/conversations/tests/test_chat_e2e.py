"""The whole chat path on the real SmolLM2 weights: browser-side socket → consumer → Celery
worker with the JAX engine → Redis channel layer → consumer, plus the HTTP APIs on a live server."""

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client

from apps.accounts.services import api_key_create, auth_session_start
from apps.conversations import services
from apps.conversations.models import Conversation, Message
from liminal.asgi import application

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def _cookie(user) -> bytes:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


async def _ui_socket(user):
    ws = WebsocketCommunicator(
        application,
        "/ws/chat/",
        headers=[
            (b"origin", b"http://localhost"),
            (b"host", b"localhost"),
            (b"cookie", await sync_to_async(_cookie)(user)),
        ],
    )
    assert (await ws.connect())[0]
    return ws


async def _until_final(ws, message_id, timeout=240):
    """Collect frames until the answer is re-rendered in a final state; return (tokens, final)."""
    tokens, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        frame = await ws.receive_from(timeout=deadline - time.monotonic())
        if f'id="stream-{message_id}" hx-swap-oob="beforeend"' in frame:
            tokens.append(frame)
        elif f'id="msg-{message_id}"' in frame and 'hx-swap-oob="outerHTML"' in frame:
            return tokens, frame
    raise AssertionError("no final frame")


@pytest.mark.asyncio
async def test_ui_streams_a_real_answer_through_a_real_worker(celery_worker_process, make_user):
    user = await sync_to_async(make_user)()
    ws = await _ui_socket(user)
    await ws.send_to(text_data=json.dumps({"action": "send", "content": "What is the capital of France?"}))
    await ws.receive_from(timeout=10)  # the user's message and the answer's placeholder
    answer = await sync_to_async(Message.objects.get)(role="assistant")
    tokens, final = await _until_final(ws, answer.pk)
    assert tokens, "the answer must stream in pieces before the final render"
    assert 'data-status="complete"' in final
    await sync_to_async(answer.refresh_from_db)()
    assert answer.status == Message.Status.COMPLETE and answer.content.strip()
    receipt = answer.receipt
    assert "SmolLM2" in receipt["model"] and receipt["completion_tokens"] > 0
    assert receipt["prompt_tokens"] > 10 and receipt["mean_logprob"] < 0
    assert receipt["time_to_first_token_ms"] > 0 and receipt["finish_reason"] in ("stop", "length")
    # Chunks are coalesced: fewer socket frames than generated tokens (or equal for tiny answers).
    assert len(tokens) <= receipt["completion_tokens"]

    # The model then names the conversation in the background, and the sidebar hears about it.
    title_frame = await ws.receive_from(timeout=120)
    conversation = await sync_to_async(Conversation.objects.get)(pk=answer.conversation_id)
    assert conversation.title and conversation.title_is_generated and len(conversation.title.split()) <= 8
    assert f'id="conv-title-{conversation.pk}"' in title_frame
    await ws.disconnect()


@pytest.mark.asyncio
async def test_stop_mid_answer_stores_a_cancelled_message(celery_worker_process, make_user, settings):
    user = await sync_to_async(make_user)()
    ws = await _ui_socket(user)
    await ws.send_to(
        text_data=json.dumps({"action": "send", "content": "Write a long story about a dragon and a knight."})
    )
    await ws.receive_from(timeout=10)
    answer = await sync_to_async(Message.objects.get)(role="assistant")
    first = await ws.receive_from(timeout=180)
    assert f'id="stream-{answer.pk}"' in first
    await ws.send_to(text_data=json.dumps({"action": "stop", "message_id": str(answer.pk)}))
    _, final = await _until_final(ws, answer.pk)
    assert 'data-status="cancelled"' in final and "Stopped." in final
    await sync_to_async(answer.refresh_from_db)()
    assert answer.status == Message.Status.CANCELLED
    assert answer.receipt["finish_reason"] == "cancelled"
    assert 0 < answer.receipt["completion_tokens"] < int(os.environ.get("TEST_CHAT_MAX_TOKENS", "48"))
    await ws.disconnect()


def _post(url, body, token):
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(request, timeout=240) as response:
        return response.headers, response.read().decode()


def test_v1_chat_over_http_and_server_sent_events(celery_worker_process, live_server_url, make_user):
    user = make_user()
    token = auth_session_start(user=user)["access_token"]
    _, body = _post(f"{live_server_url}/v1/chat", {"message": {"content": "Say hello."}}, token)
    data = json.loads(body)["data"]
    assert data["status"] == "complete" and data["content"] and data["usage"]["completion_tokens"] > 0
    conversation_id = data["conversation_id"]

    headers, stream = _post(
        f"{live_server_url}/v1/chat",
        {"conversation_id": conversation_id, "message": {"content": "And goodbye?"}, "stream": True},
        token,
    )
    assert headers["Content-Type"].startswith("text/event-stream")
    events = re.findall(r"event: (\w+)\ndata: (.*)\n\n", stream)
    names = [name for name, _ in events]
    assert names[0] == "start" and names[-1] == "message_done" and names.count("message_done") == 1
    assert "token" in names
    streamed = "".join(json.loads(d)["text"] for n, d in events if n == "token")
    done = json.loads(events[-1][1])
    assert done["content"] == streamed and done["conversation_id"] == conversation_id
    assert Conversation.objects.get(pk=conversation_id).messages.count() == 4


def test_the_official_openai_client_completes_and_streams(celery_worker_process, live_server_url, make_user, settings):
    import openai

    user = make_user()
    _, key = api_key_create(actor=user, name="openai client")
    client = openai.OpenAI(base_url=f"{live_server_url}/v1", api_key=key, timeout=240, max_retries=0)
    assert [m.id for m in client.models.list()] == [settings.SERVED_MODEL_ID]

    completion = client.chat.completions.create(
        model=settings.SERVED_MODEL_ID,
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=24,
        temperature=0,
        seed=7,
    )
    text = completion.choices[0].message.content
    assert text and completion.choices[0].finish_reason in ("stop", "length")
    assert completion.usage.completion_tokens > 0

    stream = client.chat.completions.create(
        model=settings.SERVED_MODEL_ID,
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=24,
        temperature=0,
        seed=7,
        stream=True,
    )
    pieces, finish = [], None
    for chunk in stream:
        if chunk.choices:
            pieces.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
    assert "".join(pieces) == text  # greedy: the stream spells the same answer
    assert finish in ("stop", "length")

    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{live_server_url}/v1", api_key="lk_x_y", max_retries=0).models.list()
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="not-a-model", messages=[{"role": "user", "content": "hi"}])


def test_a_worker_that_dies_mid_answer_leaves_a_failed_message(test_db_name, make_user, tmp_path):
    """Runs one answer in a separate process, kills it mid-stream, and lets the reaper find it."""
    from conftest import PROJECT_ROOT, worker_environment

    user = make_user()
    conversation = Conversation.objects.create(owner=user)
    question = Message.objects.create(
        conversation=conversation, owner=user, role="user", content="Tell me a long story."
    )
    answer = Message.objects.create(
        conversation=conversation, owner=user, parent=question, role="assistant", status="queued", request_id="doomed"
    )
    # The answer must outlive the first progress save (1 s) and a poll, however fast the engine
    # decodes: the child ignores end-of-turn tokens, so it runs its full 1000 tokens unless killed.
    env = {**worker_environment(test_db_name), "CHAT_MAX_TOKENS": "1000"}
    log = tmp_path / "doomed.log"
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import django; django.setup(); "
            f"import dataclasses; from apps.conversations import generation, tools; "
            f"params = tools.sampling_params; "
            f"tools.sampling_params = lambda *layers: dataclasses.replace(params(*layers), ignore_eos=True); "
            f"generation.run_reply('{answer.pk}')",
        ],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            answer.refresh_from_db()
            if answer.status == "streaming" and answer.content:
                break
            assert process.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the answer never started streaming"
            time.sleep(0.3)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
    time.sleep(4)  # longer than the test heartbeat (3 s)
    assert services.generations_reap_stalled() == 1
    answer.refresh_from_db()
    assert answer.status == "failed" and "stopped unexpectedly" in answer.error
    assert answer.content  # what was streamed before the crash is kept
