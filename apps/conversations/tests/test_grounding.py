"""Chats grounded in the user's own documents: retrieval, citations, gaps, and isolation."""

import json
import urllib.error
import urllib.request

import pytest
from django.http import Http404

from apps.accounts.services import auth_session_start
from apps.conversations import generation, selectors, services, tools
from apps.conversations.grounding import ground
from apps.conversations.models import Message
from apps.knowledge import services as knowledge_services
from apps.knowledge.models import KnowledgeGap
from apps.knowledge.tests.conftest import HANDBOOK


@pytest.fixture
def station(make_user):
    user = make_user()
    handbook = knowledge_services.file_upload(actor=user, name="handbook.md", content=HANDBOOK.encode())
    knowledge_services.file_ingest(file_id=handbook.pk)
    context = knowledge_services.context_create(actor=user, name="Station", file_ids=[handbook.pk])
    return user, context


@pytest.mark.django_db
def test_grounding_retrieves_the_answering_passage_with_its_citation(station):
    user, context = station
    conversation = services.conversation_create(actor=user)
    services.conversation_contexts_set(actor=user, conversation=conversation, context_ids=[context.pk])
    grounding = ground(conversation=conversation, query="At what temperature does the reactor shut down?", k=4)
    assert grounding.found and "840 degrees" in grounding.chunks[0].text
    text = grounding.system_text("Passages:\n{passages}")
    assert text.index("[1] (handbook.md") < text.index("840 degrees")
    receipt = grounding.receipt()
    assert receipt["chunks"][0]["chunk_id"] == grounding.chunks[0].chunk_id and receipt["chunks"][0]["score"] > 0
    assert receipt["context_ids"] == [str(context.pk)]


# Committed rows: the workflow runs its steps in worker threads, on their own connections.
@pytest.mark.django_db(transaction=True)
def test_an_unanswerable_question_says_so_and_records_a_gap_without_the_model(station, monkeypatch):
    user, context = station
    monkeypatch.setattr(tools, "get_engine", lambda: pytest.fail("the model must not be asked"))
    published = []
    monkeypatch.setattr(tools, "publish", lambda stream_key, event, **_: published.append(event))
    conversation, _, answer = services.chat_turn_start(
        actor=user, content="Who won the 1998 football world cup?", context_id=context.pk
    )
    assert generation.run_reply(answer.pk) == "no_knowledge"
    answer.refresh_from_db()
    assert answer.status == Message.Status.COMPLETE
    assert "could not find anything" in answer.content and "Station" in answer.content
    assert answer.receipt["retrieval"]["found"] is False
    gap = KnowledgeGap.objects.get(owner=user)
    assert gap.query == "Who won the 1998 football world cup?" and answer.receipt["retrieval"][
        "knowledge_gap_id"
    ] == str(gap.pk)
    assert published[0]["text"] == answer.content


@pytest.mark.django_db
def test_contexts_of_another_user_cannot_be_bound(station, make_user, client):
    _, context = station
    intruder = make_user()
    conversation = services.conversation_create(actor=intruder)
    with pytest.raises(Http404):
        services.conversation_contexts_set(actor=intruder, conversation=conversation, context_ids=[context.pk])
    assert not conversation.contexts.exists()
    client.force_login(intruder)
    response = client.post("/c/contexts/", {"conversation_id": str(conversation.pk), "context_ids": [str(context.pk)]})
    assert response.status_code == 404 and not conversation.contexts.exists()
    with pytest.raises(Http404):
        services.chat_turn_start(actor=intruder, content="What is the reactor trip temperature?", context_id=context.pk)
    assert not Message.objects.filter(owner=intruder).exists()


@pytest.mark.django_db
def test_the_context_picker_binds_and_a_new_chat_is_created_for_it(station, client):
    user, context = station
    client.force_login(user)
    page = client.get("/").content.decode()
    assert "Knowledge: <strong>none</strong>" in page and "Station" in page
    response = client.post("/c/contexts/", {"context_ids": [str(context.pk)]})
    conversation = selectors.conversation_list(actor=user).get()
    assert response["HX-Redirect"] == f"/c/{conversation.pk}/"
    assert list(conversation.contexts.all()) == [context]
    unbound = client.post("/c/contexts/", {"conversation_id": str(conversation.pk)})
    assert "Knowledge: <strong>none</strong>" in unbound.content.decode() and not conversation.contexts.exists()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_v1_chat_with_context_id_cites_the_passage_on_a_real_worker(
    station, celery_worker_process, live_server_url, make_user
):
    user, context = station
    token = auth_session_start(user=user)["access_token"]

    def post(body, bearer):
        request = urllib.request.Request(
            f"{live_server_url}/v1/chat",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {bearer}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=240) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    question = {"message": {"content": "At what temperature does the reactor shut down automatically?"}}
    status, body = post({**question, "context_id": str(context.pk)}, token)
    assert status == 200, body
    data = body["data"]
    assert data["status"] == "complete" and data["content"]
    snippets = data["context_snippets"]
    assert snippets and "840 degrees" in snippets[0]["text"] and snippets[0]["file_name"] == "handbook.md"
    receipt_chunks = data["receipt"]["retrieval"]["chunks"]
    assert [s["chunk_id"] for s in snippets] == [c["chunk_id"] for c in receipt_chunks]

    # The same question from someone else, naming the first user's context, reaches none of it.
    stranger_token = auth_session_start(user=make_user())["access_token"]
    status, body = post({**question, "context_id": str(context.pk)}, stranger_token)
    assert status == 404 and body["error"]["code"] == "not_found"
    status, body = post(question, stranger_token)
    assert status == 200 and body["data"]["context_snippets"] == []
    assert "retrieval" not in body["data"]["receipt"]
