"""Upload → ingestion by a real Celery worker on the real broker → retrieval, end to end."""

import time

import numpy as np
import pytest

from apps.knowledge import selectors
from apps.knowledge.models import Chunk
from apps.knowledge.tests.conftest import HANDBOOK, upload
from workers.ingest.tests.pdf_factory import make_pdf

QUESTION = "At what temperature does the reactor shut itself down?"


def _wait_until_settled(client, file_id, timeout=120) -> dict:
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        data = client.get(f"/v1/files/{file_id}").json()["data"]
        seen.append(data["status"])
        if data["status"] in {"ready", "failed"}:
            return data
        time.sleep(0.25)
    raise AssertionError(f"file {file_id} did not finish ingesting; statuses seen: {sorted(set(seen))}")


@pytest.mark.slow
def test_upload_ingest_on_a_real_worker_then_retrieve(celery_worker_process, make_user, client_for):
    alice, bob = make_user(), make_user()
    alice_api, bob_api = client_for(alice), client_for(bob)

    context = alice_api.post("/v1/contexts", {"name": "Station"}, format="json").json()["data"]
    uploaded = upload(alice_api, "handbook.md", HANDBOOK.encode(), "text/markdown", context_id=context["context_id"])
    assert uploaded.status_code == 201, uploaded.content
    file_id = uploaded.json()["data"]["file_id"]

    settled = _wait_until_settled(alice_api, file_id)

    assert settled["status"] == "ready", settled
    assert settled["progress"]["percent"] == 100 and settled["progress"]["chunks_total"] >= 4
    assert settled["encoder_id"].startswith("all-MiniLM-L6-v2@")
    chunks = list(Chunk.objects.filter(file_id=file_id).order_by("ordinal"))
    assert len(chunks) == settled["progress"]["chunks_total"]
    assert all(np.asarray(chunk.embedding).shape == (384,) and chunk.embedding_dim == 384 for chunk in chunks)

    listed = alice_api.get(f"/v1/contexts/{context['context_id']}/chunks?limit=100").json()["data"]
    assert listed["total"] == len(chunks) and {item["file_id"] for item in listed["items"]} == {file_id}

    found = alice_api.get(f"/v1/contexts/{context['context_id']}/search", {"q": QUESTION}).json()["data"]
    assert found["found"] and "840 degrees Celsius" in found["items"][0]["text"]
    answer = selectors.retrieve_for_prompt(actor=alice, context_ids=[context["context_id"]], query=QUESTION)
    assert answer[0].chunk_id == found["items"][0]["chunk_id"]

    # The second user asks the same question, over their own (empty) context and over Alice's id.
    bob_context = bob_api.post("/v1/contexts", {"name": "Station"}, format="json").json()["data"]
    assert selectors.retrieve_for_prompt(actor=bob, context_ids=[bob_context["context_id"]], query=QUESTION) == []
    assert selectors.retrieve_for_prompt(actor=bob, context_ids=[context["context_id"]], query=QUESTION) == []
    assert bob_api.get(f"/v1/contexts/{context['context_id']}/search", {"q": QUESTION}).status_code == 404
    assert bob_api.get(f"/v1/contexts/{context['context_id']}/chunks").status_code == 404

    # Re-ingesting on the worker changes nothing.
    before = list(Chunk.objects.filter(file_id=file_id).order_by("ordinal").values_list("id", "content_sha256"))
    assert alice_api.post(f"/v1/files/{file_id}/reingest").status_code == 202
    again = _wait_until_settled(alice_api, file_id)
    assert again["status"] == "ready"
    time.sleep(0.5)
    after = list(Chunk.objects.filter(file_id=file_id).order_by("ordinal").values_list("id", "content_sha256"))
    assert after == before


@pytest.mark.slow
def test_a_pdf_the_worker_cannot_read_fails_visibly(celery_worker_process, make_user, client_for):
    user = make_user()
    api = client_for(user)
    filler = [f"Line {n} of the logbook records the wind and the swell." for n in range(30)]
    readable = make_pdf([["The east hut's stove takes paraffin, never diesel.", *filler]])
    # Valid header, xref and page tree (so the upload check passes) but a content stream that
    # cannot be decompressed: the damage only shows when the text is extracted.
    broken = readable.replace(b"<< /Length", b"<< /Filter /FlateDecode /Length", 1)

    good = upload(api, "log.pdf", readable, "application/pdf").json()["data"]
    bad = upload(api, "broken.pdf", broken, "application/pdf")
    assert bad.status_code == 201, "the damage is past what the upload check opens"

    assert _wait_until_settled(api, good["file_id"])["status"] == "ready"
    failed = _wait_until_settled(api, bad.json()["data"]["file_id"])
    assert failed["status"] == "failed" and failed["error"]["code"] == "no_text"
    assert "broken.pdf" in failed["error"]["message"]
    assert not Chunk.objects.filter(file_id=failed["file_id"]).exists()
    assert Chunk.objects.filter(file_id=good["file_id"]).exists()
