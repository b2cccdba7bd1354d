from datetime import timedelta

import pytest
from django.utils import timezone

from apps.knowledge import services
from apps.knowledge.models import Chunk, Context, KnowledgeFile
from apps.knowledge.tests.conftest import HANDBOOK

pytestmark = pytest.mark.django_db


@pytest.fixture
def handbook(user):
    file = services.file_upload(actor=user, name="handbook.md", content=HANDBOOK.encode(), folder="station")
    services.file_ingest(file_id=file.pk)
    return file


def test_context_lifecycle(client_for, user, handbook):
    api = client_for(user)

    created = api.post("/v1/contexts", {"name": "  Field   docs ", "description": "For the season"}, format="json")
    assert created.status_code == 201, created.content
    context = created.json()["data"]
    assert context["name"] == "Field docs" and context["files"] == [] and context["folders"] == []
    context_id = context["context_id"]

    assert api.post("/v1/contexts", {"name": "field DOCS"}, format="json").status_code == 409
    assert api.post("/v1/contexts", {"name": ""}, format="json").status_code == 400

    added = api.post(f"/v1/contexts/{context_id}/files", {"file_id": str(handbook.pk)}, format="json")
    assert added.status_code == 200 and [f["file_id"] for f in added.json()["data"]["files"]] == [str(handbook.pk)]
    listed = api.get("/v1/contexts").json()["data"]["items"]
    assert [(c["context_id"], c["file_count"]) for c in listed] == [(context_id, 1)]

    chunks = api.get(f"/v1/contexts/{context_id}/chunks", {"limit": 2, "offset": 1}).json()["data"]
    assert chunks["total"] == Chunk.objects.filter(file=handbook).count() and len(chunks["items"]) == 2
    assert [item["ordinal"] for item in chunks["items"]] == [1, 2]
    first = chunks["items"][0]
    assert first["file_name"] == "handbook.md" and first["embedding_dim"] == 384 and first["text"]
    assert api.get(f"/v1/chunks/{first['chunk_id']}").json()["data"]["text"] == first["text"]
    assert api.get(f"/v1/contexts/{context_id}/chunks", {"limit": 1000}).status_code == 400

    renamed = api.patch(f"/v1/contexts/{context_id}", {"name": "Station docs"}, format="json")
    assert renamed.json()["data"]["name"] == "Station docs"

    removed = api.delete(f"/v1/contexts/{context_id}/files/{handbook.pk}")
    assert removed.status_code == 200 and removed.json()["data"]["files"] == []
    assert api.delete(f"/v1/contexts/{context_id}/files/{handbook.pk}").status_code == 404

    with_folder = api.post(f"/v1/contexts/{context_id}/folders", {"path": "station"}, format="json")
    assert with_folder.json()["data"]["folders"] == ["station"]
    assert api.get("/v1/files", {"context_id": context_id}).json()["data"]["items"][0]["file_id"] == str(handbook.pk)
    search = api.get(f"/v1/contexts/{context_id}/search", {"q": "When is breakfast?"}).json()["data"]
    assert search["found"] and "Breakfast is at seven" in search["items"][0]["text"]
    assert search["items"][0]["citation"].startswith("handbook.md")
    assert api.post(f"/v1/contexts/{context_id}/folders", {"path": "../etc"}, format="json").status_code == 400
    assert api.delete(f"/v1/contexts/{context_id}/folders", {"path": "station"}, format="json").status_code == 200

    assert api.delete(f"/v1/contexts/{context_id}").json()["data"] == {"deleted": True, "context_id": context_id}
    assert not Context.objects.exists() and KnowledgeFile.objects.filter(pk=handbook.pk).exists()


def test_contexts_are_private(client_for, user, other_user, handbook):
    context = services.context_create(actor=user, name="Mine", file_ids=[handbook.pk])
    chunk = Chunk.objects.filter(file=handbook).first()
    intruder = client_for(other_user)

    assert intruder.get("/v1/contexts").json()["data"]["items"] == []
    for url in [
        f"/v1/contexts/{context.pk}",
        f"/v1/contexts/{context.pk}/chunks",
        f"/v1/contexts/{context.pk}/search?q=reactor",
        f"/v1/chunks/{chunk.pk}",
    ]:
        response = intruder.get(url)
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found", url
    assert intruder.delete(f"/v1/contexts/{context.pk}").status_code == 404
    theirs = services.context_create(actor=other_user, name="Theirs")
    stealing = intruder.post(f"/v1/contexts/{theirs.pk}/files", {"file_id": str(handbook.pk)}, format="json")
    assert stealing.status_code == 404
    created = intruder.post("/v1/contexts", {"name": "X", "file_ids": [str(handbook.pk)]}, format="json")
    assert created.status_code == 404
    assert Context.objects.filter(owner=other_user).count() == 1


def test_moving_a_file_to_another_folder(client_for, user, handbook):
    api = client_for(user)
    moved = api.patch(f"/v1/files/{handbook.pk}", {"folder": "archive/2025"}, format="json")
    assert moved.status_code == 200 and moved.json()["data"]["folder"] == "archive/2025"
    assert api.patch(f"/v1/files/{handbook.pk}", {"folder": "../up"}, format="json").status_code == 400
    assert api.get("/v1/files", {"folder": "archive"}).json()["data"]["items"][0]["file_id"] == str(handbook.pk)
    assert api.get("/v1/files", {"folder": "arch"}).json()["data"]["items"] == []


def test_file_chunks_and_status_through_the_api(client_for, user, handbook):
    api = client_for(user)
    detail = api.get(f"/v1/files/{handbook.pk}").json()["data"]
    assert detail["status"] == "ready" and detail["error"] is None
    assert detail["progress"]["percent"] == 100
    chunks = api.get(f"/v1/files/{handbook.pk}/chunks").json()["data"]
    assert chunks["total"] == detail["progress"]["chunks_total"]
    assert any("Reactor safety" in item["location"] for item in chunks["items"])


def test_a_stalled_ingestion_can_be_retried_but_a_live_one_is_left_alone(user, settings):
    file = services.file_upload(actor=user, name="notes.txt", content=b"Notes on the anemometer mast.")
    KnowledgeFile.objects.filter(pk=file.pk).update(status=KnowledgeFile.Status.PROCESSING)

    services.file_reingest(file=file)
    file.refresh_from_db()
    assert file.status == KnowledgeFile.Status.PROCESSING and not file.is_stalled

    settings.KNOWLEDGE_STALLED_AFTER_SECONDS = 60
    old = file.updated_at - timedelta(minutes=5)
    KnowledgeFile.objects.filter(pk=file.pk).update(updated_at=old)
    file.refresh_from_db()
    assert file.is_stalled
    services.file_reingest(file=file)
    file.refresh_from_db()
    assert file.status == KnowledgeFile.Status.QUEUED and not file.is_stalled


def test_a_file_queued_too_long_says_so_and_can_be_sent_again(user, settings, client, monkeypatch):
    from apps.knowledge import services as knowledge_services

    sent = []
    monkeypatch.setattr(knowledge_services, "_queue_ingestion", lambda file: sent.append(file.pk))
    file = services.file_upload(actor=user, name="notes.txt", content=b"Notes on the anemometer mast.")
    settings.KNOWLEDGE_STALLED_AFTER_SECONDS = 60
    client.force_login(user)
    status_url = f"/knowledge/files/{file.pk}/status"
    assert "Re-ingest to send it again" not in client.get(status_url).content.decode()
    KnowledgeFile.objects.filter(pk=file.pk).update(updated_at=file.updated_at - timedelta(minutes=5))
    file.refresh_from_db()
    assert file.status == KnowledgeFile.Status.QUEUED and file.is_stalled
    assert "Re-ingest to send it again" in client.get(status_url).content.decode()
    services.file_reingest(file=file)
    file.refresh_from_db()
    assert sent[-1] == file.pk and not file.is_stalled


def test_beat_sends_stalled_files_again_once_per_window(
    user, settings, monkeypatch, django_capture_on_commit_callbacks
):
    from apps.knowledge.tasks import ingest_file

    sent = []
    monkeypatch.setattr(ingest_file, "delay", lambda file_id: sent.append(file_id))
    settings.KNOWLEDGE_STALLED_AFTER_SECONDS = 60
    waiting = services.file_upload(actor=user, name="a.txt", content=b"Notes on the anemometer mast.")
    working = services.file_upload(actor=user, name="b.txt", content=b"Notes on the wind vane.")
    ready = services.file_upload(actor=user, name="c.txt", content=b"Notes on the rain gauge.")
    KnowledgeFile.objects.filter(pk=working.pk).update(status=KnowledgeFile.Status.PROCESSING)
    KnowledgeFile.objects.filter(pk=ready.pk).update(status=KnowledgeFile.Status.READY)
    assert services.files_reap_stalled() == [], "nothing has waited a whole window yet"
    later = timezone.now() + timedelta(seconds=61)
    with django_capture_on_commit_callbacks(execute=True):
        resent = services.files_reap_stalled(now=later)
    assert sorted(resent) == sorted(sent) == sorted([str(waiting.pk), str(working.pk)])
    assert services.files_reap_stalled(now=later + timedelta(seconds=30)) == [], "once per window"
    assert len(services.files_reap_stalled(now=later + timedelta(seconds=62))) == 2


def test_the_file_reaper_runs_on_beat_outside_the_ingest_queue():
    from liminal.celery import app

    entry = app.conf.beat_schedule["reap-stalled-knowledge-files"]
    assert entry["task"] == "apps.knowledge.tasks.reap_stalled_files"
    assert app.amqp.router.route({}, entry["task"], (), {})["queue"].name == "default"
    assert app.amqp.router.route({}, "apps.knowledge.tasks.ingest_file", (), {})["queue"].name == "ingest"


def test_gaps_api(client_for, user, other_user):
    gap = services.knowledge_gap_record(actor=user, query="Where is the spare anemometer?", best_score=0.1)
    api = client_for(user)
    items = api.get("/v1/knowledge/gaps").json()["data"]["items"]
    assert [item["gap_id"] for item in items] == [str(gap.pk)] and items[0]["best_score"] == 0.1
    assert client_for(other_user).post(f"/v1/knowledge/gaps/{gap.pk}/resolve").status_code == 404
    resolved = api.post(f"/v1/knowledge/gaps/{gap.pk}/resolve").json()["data"]
    assert resolved["resolved_at"] is not None
    assert api.get("/v1/knowledge/gaps").json()["data"]["items"] == []
    assert len(api.get("/v1/knowledge/gaps", {"include_resolved": "1"}).json()["data"]["items"]) == 1


def test_created_objects_come_back_with_id_and_chunks_with_content(user, client_for):
    """The seed system's clients read `data.id` of what a POST made, and `content` of a chunk."""
    from apps.knowledge import services

    client = client_for(user)
    created = client.post("/v1/contexts", {"name": "Ids"}, format="json").json()["data"]
    assert created["id"] == created["context_id"]
    conversation = client.post("/v1/conversations", {"title": "Ids"}, format="json").json()["data"]
    assert conversation["id"] == conversation["conversation_id"]
    handbook = services.file_upload(actor=user, name="notes.md", content=b"# Notes\n\nThe kettle is in the galley.\n")
    services.file_ingest(file_id=handbook.pk)
    [chunk] = client.get(f"/v1/files/{handbook.pk}/chunks").json()["data"]["items"]
    assert chunk["id"] == chunk["chunk_id"] and chunk["content"] == chunk["text"] and "kettle" in chunk["content"]
