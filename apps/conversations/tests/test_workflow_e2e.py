"""The seeded workflow on the real SmolLM2 weights, through a live Daphne server and a real
Celery worker: every entry point answers through it with the same receipt shape and the same
bytes as the pre-workflow code path; editing the workflow changes the next answer without a
restart, and reverting restores it byte for byte."""

import asyncio
import json
import re
import time
import urllib.request

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings

from apps.accounts.services import api_key_create, auth_session_start
from apps.artifacts import selectors as artifact_selectors
from apps.artifacts import services as artifact_services
from apps.conversations.models import Message
from apps.knowledge import services as knowledge_services
from apps.knowledge.tests.conftest import HANDBOOK
from liminal.asgi import application

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

QUESTION = "What is the capital of France?"
# The chat defaults before prompts and sampling became workflow data (settings.CHAT_*).
OLD_SYSTEM_PROMPT = "You are Liminal, a helpful, honest assistant. Answer clearly and concisely."
OLD_SAMPLING = {"greedy": False, "temperature": 0.3, "top_p": 0.9, "repetition_penalty": 1.1, "seed": 1234}


# The two recall steps run in parallel, so they may finish in either order.
PLAIN_STEPS = ["remember", "recall_*", "recall_*", "recall", "has_documents", "plain", "end"]


def _steps(trace) -> list[str]:
    return ["recall_*" if step["node"].startswith("recall_") else step["node"] for step in trace]


def _post(url, body, token, method="POST"):
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method=method,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(request, timeout=240) as response:
        return response.read().decode()


def _default_workflow():
    return artifact_selectors.global_artifact(kind="workflow.chat", name="chat.default")


@pytest.fixture
def old_defaults(make_user):
    """The default workflow set to the old settings' prompt and sampling, with a fixed seed."""
    admin = make_user(role="admin")
    workflow = _default_workflow()
    original = workflow.version_number
    artifact_services.artifact_patch(
        actor=admin,
        artifact=workflow,
        patch=[
            {"op": "replace", "path": "/defaults/system_prompt", "value": OLD_SYSTEM_PROMPT},
            {"op": "replace", "path": "/defaults/sampling", "value": {**OLD_SAMPLING, "max_tokens": 512}},
        ],
    )
    yield
    artifact_services.artifact_revert(actor=admin, artifact=_default_workflow(), version=original)


def _pre_workflow_answer() -> str:
    """What the code before this change produced: the engine, the old system prompt, old sampling."""
    from workers.llm import SamplingParams, load_engine

    engine = load_engine(max_batch_slots=4, max_seq_len=1024, decode_weights=settings.ENGINE_DECODE_WEIGHTS)
    try:
        prompt = engine.render_chat(
            [{"role": "system", "content": OLD_SYSTEM_PROMPT}, {"role": "user", "content": QUESTION}]
        )
        params = SamplingParams(
            temperature=0.3, top_p=0.9, repetition_penalty=1.1, seed=1234, max_tokens=int(_test_max_tokens())
        )
        return engine.generate(prompt, params).text
    finally:
        engine.shutdown()


def _test_max_tokens():
    import os

    return os.environ.get("TEST_CHAT_MAX_TOKENS", "48")


async def _ui_answer(user) -> Message:
    from django.test import Client

    def cookie():
        client = Client()
        client.force_login(user)
        return f"sessionid={client.cookies['sessionid'].value}".encode()

    ws = WebsocketCommunicator(
        application,
        "/ws/chat/",
        headers=[(b"origin", b"http://localhost"), (b"host", b"localhost"), (b"cookie", await sync_to_async(cookie)())],
    )
    assert (await ws.connect())[0]
    await ws.send_to(text_data=json.dumps({"action": "send", "content": QUESTION}))
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        frame = await ws.receive_from(timeout=deadline - time.monotonic())
        if 'hx-swap-oob="outerHTML"' in frame and re.search(r'data-status="(complete|failed|cancelled)"', frame):
            break
    await ws.disconnect()
    return await sync_to_async(Message.objects.filter(owner=user, role="assistant").latest)("created_at")


async def _api_socket_answer(token) -> dict:
    ws = WebsocketCommunicator(
        application, "/v1/chat/stream", headers=[(b"origin", b"http://localhost"), (b"host", b"localhost")]
    )
    assert (await ws.connect())[0]
    await ws.send_json_to({"access_token": token, "message": {"content": QUESTION}})
    events = []
    while True:
        frame = await ws.receive_json_from(timeout=240)
        events.append(frame)
        if frame["event"] in ("message_done", "error"):
            break
    await ws.disconnect()
    return events


def test_every_entry_point_answers_through_the_workflow_as_the_old_code_did(
    celery_worker_process, live_server_url, make_user, old_defaults
):
    expected = _pre_workflow_answer()
    assert expected.strip()
    user = make_user()
    token = auth_session_start(user=user)["access_token"]

    http = json.loads(_post(f"{live_server_url}/v1/chat", {"message": {"content": QUESTION}}, token))["data"]
    socket_events = asyncio.run(_api_socket_answer(token))
    socket_done = socket_events[-1]["data"]
    ui = asyncio.run(_ui_answer(user))

    import openai

    _, key = api_key_create(actor=user, name="e2e")
    client = openai.OpenAI(base_url=f"{live_server_url}/v1", api_key=key, timeout=240, max_retries=0)
    completion = client.chat.completions.create(
        model=settings.SERVED_MODEL_ID, messages=[{"role": "user", "content": QUESTION}]
    )
    completion_text = completion.choices[0].message.content
    completion_message = Message.objects.get(pk=completion.model_extra["liminal"]["message_id"])

    assert http["content"] == socket_done["content"] == ui.content == completion_text == expected
    assert "".join(e["data"] for e in socket_events if e["event"] == "token") == expected
    # The workflow's steps in order, and the routing decision (made beside the first steps)
    # before the answer's step, which runs on the adapters it chose.
    steps = _steps([e["data"] for e in socket_events if e["event"] == "trace"])
    assert [step for step in steps if step != "routing"] == PLAIN_STEPS
    assert steps.count("routing") == 1 and steps.index("routing") < steps.index(PLAIN_STEPS[-2])

    receipts = [
        http["receipt"],
        socket_done["receipt"],
        ui.receipt,
        completion_message.receipt,
    ]
    workflow = _default_workflow()
    for receipt in receipts:
        assert set(receipt) == set(receipts[0])
        assert receipt["workflow"] == {
            "id": str(workflow.pk),
            "version": workflow.version_number,
            "name": "chat.default",
        }
        assert _steps(receipt["workflow_trace"]) == PLAIN_STEPS
        assert receipt["correction_ids"] == [] and receipt["memory_ids"] == []
        assert all(step["duration_ms"] >= 0 for step in receipt["workflow_trace"])
        assert receipt["completion_tokens"] > 0 and "SmolLM2" in receipt["model"]
    assert http["workflow_id"] == str(workflow.pk) and http["workflow_trace"] == http["receipt"]["workflow_trace"]
    # The seeded routing policy ran; with no adapter to choose from, nothing was gated in.
    assert [rule["id"] for rule in http["routing_trace"]] == ["persona", "nearest_skill", "safety_off"]
    assert http["adapter_gates"] == [] and http["receipt"]["routing_policy"]["version"] >= 1
    assert http["content_struct"]["text"] == http["content"]
    # The completion is a stored turn too, kept out of the sidebar.
    assert completion_message.conversation.origin == "completions"


def _grounded_answer(live_server_url, token, context_id) -> dict:
    body = {"message": {"content": "At what temperature does the reactor shut down?"}, "context_id": str(context_id)}
    return json.loads(_post(f"{live_server_url}/v1/chat", body, token))["data"]


def test_editing_the_workflow_changes_the_next_answer_and_reverting_restores_it(
    celery_worker_process, live_server_url, make_user
):
    admin = make_user(role="admin")
    admin_token = auth_session_start(user=admin)["access_token"]
    user = make_user()
    token = auth_session_start(user=user)["access_token"]
    handbook = knowledge_services.file_upload(actor=user, name="handbook.md", content=HANDBOOK.encode())
    knowledge_services.file_ingest(file_id=handbook.pk)
    context = knowledge_services.context_create(actor=user, name="Station", file_ids=[handbook.pk])
    workflow = _default_workflow()
    before = workflow.version_number
    ids = [node["id"] for node in workflow.body["nodes"]]
    switch = ids.index("has_documents")
    # The document branch's nodes, last first so each index still holds when its turn comes.
    document_nodes = sorted((ids.index(name), name) for name in ("classify", "route", "rag"))[::-1]

    grounded = _grounded_answer(live_server_url, token, context.pk)
    assert grounded["receipt"]["retrieval"]["found"] and grounded["content_struct"]["grounded"]
    assert "rag" in [step["node"] for step in grounded["workflow_trace"]]

    # An admin removes the retrieval branch, over the API, while the worker keeps running.
    patched = json.loads(
        _post(
            f"{live_server_url}/v1/artifacts/{workflow.pk}",
            {
                "patch": [
                    {
                        "op": "replace",
                        "path": f"/nodes/{switch}/branches",
                        "value": [{"when": "true", "next": "plain"}],
                    },
                    *(
                        op
                        for index, name in document_nodes
                        for op in (
                            {"op": "test", "path": f"/nodes/{index}/id", "value": name},
                            {"op": "remove", "path": f"/nodes/{index}"},
                        )
                    ),
                ],
                "change_note": "No retrieval",
            },
            admin_token,
            method="PATCH",
        )
    )["data"]
    assert patched["version"] == before + 1
    plain = _grounded_answer(live_server_url, token, context.pk)
    assert "retrieval" not in plain["receipt"] and plain["content"] != grounded["content"]
    assert _steps(plain["workflow_trace"]) == PLAIN_STEPS

    reverted = json.loads(
        _post(f"{live_server_url}/v1/artifacts/{workflow.pk}", {"revert_to": before}, admin_token, method="PATCH")
    )["data"]
    assert reverted["version"] == before + 2 and reverted["schema"] == workflow.body
    again = _grounded_answer(live_server_url, token, context.pk)
    assert again["content"] == grounded["content"]
    assert again["receipt"]["workflow"]["version"] == before + 2


def test_a_tool_can_be_invoked_on_its_own(celery_worker_process, api_client, make_user, login_tokens):
    user = make_user()
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {login_tokens(user)['access_token']}")
    classifier = artifact_selectors.global_artifact(kind="tool.spec", name="llm.intent_classifier_v1")
    response = api_client.post(
        f"/v1/tools/{classifier.pk}/invoke", {"inputs": {"message": "Hello there!"}}, format="json"
    )
    assert response.status_code == 200, response.content
    data = response.json()["data"]
    assert data["status"] == "ok" and data["outputs"]["intent"] == "smalltalk"
    assert data["workflow_trace"][0]["tool"] == "llm.intent_classifier_v1"

    question = api_client.post(
        f"/v1/tools/{classifier.pk}/invoke", {"inputs": {"message": "Who wrote Hamlet?"}}, format="json"
    ).json()["data"]
    assert question["outputs"]["intent"] == "question"

    bad = api_client.post(f"/v1/tools/{classifier.pk}/invoke", {"inputs": {"message": ""}}, format="json")
    assert bad.status_code == 400 and bad.json()["error"]["details"]["pointer"] == "/inputs/message"
    other = make_user()
    context = knowledge_services.context_create(actor=other, name="Theirs", file_ids=[])
    hidden = api_client.post(
        f"/v1/tools/{classifier.pk}/invoke",
        {"inputs": {"message": "hi"}, "context_id": str(context.pk)},
        format="json",
    )
    assert hidden.status_code == 404
    nested = api_client.post(f"/v1/tools/{classifier.pk}/invoke", {"inputs": "not an object"}, format="json")
    assert nested.status_code == 400 and nested.json()["error"]["code"] == "validation_error"
