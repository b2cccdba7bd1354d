import numpy as np
import pytest

from apps.knowledge import services
from apps.knowledge.embedding import current_encoder
from apps.knowledge.models import Chunk, KnowledgeFile
from apps.knowledge.tests.conftest import HANDBOOK
from workers.ingest import CHUNKING_VERSION
from workers.ingest.tests.pdf_factory import make_pdf

pytestmark = pytest.mark.django_db


def _upload(user, name, content, **kwargs) -> KnowledgeFile:
    return services.file_upload(actor=user, name=name, content=content, **kwargs)


def _chunk_rows(file):
    return list(Chunk.objects.filter(file=file).order_by("ordinal").values_list("id", "ordinal", "content_sha256"))


def test_ingestion_stores_chunks_with_vectors_text_search_and_encoder(user):
    file = _upload(user, "handbook.md", HANDBOOK.encode())

    services.file_ingest(file_id=file.pk, batch_size=2)

    file.refresh_from_db()
    encoder = current_encoder()
    assert file.status == KnowledgeFile.Status.READY and file.phase == KnowledgeFile.Phase.DONE
    assert file.error_code == "" and file.progress_percent == 100
    assert file.encoder_id == encoder.encoder_id and file.chunking_version == CHUNKING_VERSION
    chunks = list(Chunk.objects.filter(file=file).order_by("ordinal"))
    assert len(chunks) == file.chunks_total == file.chunks_done >= 4
    assert [chunk.ordinal for chunk in chunks] == list(range(len(chunks)))
    for chunk in chunks:
        vector = np.asarray(chunk.embedding)
        assert vector.shape == (384,) and chunk.embedding_dim == 384
        assert abs(np.linalg.norm(vector) - 1) < 1e-4
        assert chunk.encoder_id == encoder.encoder_id and chunk.owner_id == user.pk
        assert chunk.search_vector  # the generated tsvector column is filled in by PostgreSQL
    reactor = next(chunk for chunk in chunks if "840 degrees" in chunk.text)
    assert reactor.heading.endswith("Reactor safety") and "Reactor safety" in reactor.location
    assert reactor.line_start is not None
    assert Chunk.objects.filter(file=file, search_vector="reactor").exists()


def test_reingesting_is_idempotent(user):
    file = _upload(user, "handbook.md", HANDBOOK.encode())
    services.file_ingest(file_id=file.pk)
    before = _chunk_rows(file)

    services.file_ingest(file_id=file.pk)
    services.file_reingest(file=file)
    services.file_ingest(file_id=file.pk)

    assert _chunk_rows(file) == before
    file.refresh_from_db()
    assert file.status == KnowledgeFile.Status.READY and file.chunks_done == len(before)


def test_an_interrupted_ingestion_resumes_without_redoing_stored_chunks(user, monkeypatch):
    file = _upload(user, "handbook.md", HANDBOOK.encode())
    encoder = current_encoder()
    real_encode = encoder.encode
    calls = []

    def crash_on_second_batch(texts, **kwargs):
        calls.append(len(texts))
        if len(calls) == 2:
            raise RuntimeError("worker killed")
        return real_encode(texts, **kwargs)

    monkeypatch.setattr(encoder, "encode", crash_on_second_batch)
    with pytest.raises(RuntimeError):
        services.file_ingest(file_id=file.pk, batch_size=2)
    file.refresh_from_db()
    assert file.status == KnowledgeFile.Status.FAILED and file.error_code == "internal_error"
    survivors = _chunk_rows(file)
    assert len(survivors) == 2, "the first batch was committed"

    calls.clear()
    monkeypatch.setattr(encoder, "encode", lambda texts, **kwargs: calls.append(len(texts)) or real_encode(texts))
    services.file_ingest(file_id=file.pk, batch_size=2)

    file.refresh_from_db()
    assert file.status == KnowledgeFile.Status.READY
    rows = _chunk_rows(file)
    assert rows[:2] == survivors, "stored chunks were kept, not rebuilt"
    assert sum(calls) == len(rows) - 2, "only the missing chunks were embedded"


def test_a_new_encoder_replaces_vectors_made_by_the_old_one(user):
    file = _upload(user, "handbook.md", HANDBOOK.encode())
    services.file_ingest(file_id=file.pk)
    Chunk.objects.filter(file=file).update(encoder_id="old-model@000000000000")
    KnowledgeFile.objects.filter(pk=file.pk).update(encoder_id="old-model@000000000000")

    services.file_ingest(file_id=file.pk)

    assert set(Chunk.objects.filter(file=file).values_list("encoder_id", flat=True)) == {current_encoder().encoder_id}


def test_pdf_chunks_know_their_pages(user):
    filler = [f"Stake {n} was read at dawn and again at dusk, and both readings were logged." for n in range(24)]
    pdf = make_pdf(
        [
            ["The glacier survey began in 2019 with six stakes on the ice.", *filler],
            ["The terminus retreated by 312 metres over the five seasons measured.", *filler],
        ]
    )
    file = _upload(user, "survey.pdf", pdf)

    services.file_ingest(file_id=file.pk)

    file.refresh_from_db()
    assert file.status == KnowledgeFile.Status.READY and file.page_count == 2 and file.kind == "pdf"
    assert {chunk.page_start for chunk in Chunk.objects.filter(file=file)} == {1, 2}
    retreat = Chunk.objects.get(file=file, text__contains="312 metres")
    assert retreat.page_end == 2 and retreat.location in {"page 2", "pages 1–2"}


def test_a_file_changed_on_disk_fails_with_a_clear_error_and_no_chunks(user):
    file = _upload(user, "notes.txt", b"Original notes about the station generator.")
    services.file_absolute_path(file).write_bytes(b"tampered")

    services.file_ingest(file_id=file.pk)

    file.refresh_from_db()
    assert file.status == KnowledgeFile.Status.FAILED
    assert file.error_code == "corrupt_file" and "changed since it was uploaded" in file.error_message
    assert not Chunk.objects.filter(file=file).exists()


def test_a_file_without_text_fails_clearly(user):
    file = _upload(user, "blank.md", b"   \n\n   \n")

    services.file_ingest(file_id=file.pk)

    file.refresh_from_db()
    assert file.status == KnowledgeFile.Status.FAILED and file.error_code == "no_text"
    assert "No text could be extracted from “blank.md”" in file.error_message


def test_deleting_a_file_removes_its_chunks(user, django_capture_on_commit_callbacks):
    file = _upload(user, "handbook.md", HANDBOOK.encode())
    services.file_ingest(file_id=file.pk)
    path = services.file_absolute_path(file)
    assert Chunk.objects.filter(file_id=file.pk).exists() and path.exists()

    with django_capture_on_commit_callbacks(execute=True):
        services.file_delete(file=file)

    assert not Chunk.objects.filter(file_id=file.pk).exists()
    assert not path.exists()


def test_ingesting_a_deleted_file_is_a_no_op(user):
    file = _upload(user, "notes.txt", b"Short notes.")
    file_id = file.pk
    KnowledgeFile.objects.filter(pk=file_id).delete()
    assert services.file_ingest(file_id=file_id) is None


def _failed(file) -> tuple[str, str]:
    file.refresh_from_db()
    assert file.status == KnowledgeFile.Status.FAILED
    assert not Chunk.objects.filter(file=file).exists()  # nothing half-stored
    return file.error_code, file.error_message


def test_a_file_that_expands_past_the_text_limit_fails_whole(user, settings):
    """The probe's CSV (50 rows x 20,000 columns) made 38,450 chunks; scaled down here."""
    settings.INGEST_MAX_TEXT_CHARS = 100_000
    header = ",".join(f"c{n}" for n in range(2000))
    rows = "\n".join(",".join(str(n % 7) for n in range(2000)) for _ in range(50))
    file = _upload(user, "wide.csv", f"{header}\n{rows}\n".encode())
    services.file_ingest(file_id=file.pk)
    code, message = _failed(file)
    assert code == "too_much_text" and "more than 100,000 characters" in message


def test_passages_are_bounded_per_file_and_per_user(user, settings):
    settings.INGEST_MAX_CHUNKS_PER_FILE = 3
    big = _upload(user, "handbook.md", HANDBOOK.encode())
    services.file_ingest(file_id=big.pk)
    code, message = _failed(big)
    assert code == "too_much_text" and "more than the 3 one file may add" in message

    settings.INGEST_MAX_CHUNKS_PER_FILE = 10_000
    first = _upload(user, "first.md", HANDBOOK.encode() + b"\n\nThe first copy.")
    services.file_ingest(file_id=first.pk)
    first.refresh_from_db()
    assert first.status == KnowledgeFile.Status.READY
    settings.INGEST_MAX_CHUNKS_PER_USER = first.chunks_total + 1
    second = _upload(user, "second.md", HANDBOOK.encode() + b"\n\nOne more line.")
    services.file_ingest(file_id=second.pk)
    code, message = _failed(second)
    assert code == "knowledge_full" and "past your limit" in message
    first.refresh_from_db()
    assert first.status == KnowledgeFile.Status.READY and first.chunks_done == first.chunks_total


def test_an_extraction_past_its_time_limit_fails_the_file_and_frees_the_worker(user, settings):
    settings.INGEST_EXTRACT_TIMEOUT_S = 0.5
    services.file_ingest(file_id=_upload(user, "warm.md", HANDBOOK.encode()).pk)  # the child is up
    slow = make_pdf([[f"Line {n} of a page that takes the PDF parser a while to read." for n in range(6000)]] * 8)
    file = _upload(user, "slow.pdf", slow)
    services.file_ingest(file_id=file.pk)
    code, message = _failed(file)
    assert code == "extraction_timeout" and "took longer than 0.5 seconds" in message
    settings.INGEST_EXTRACT_TIMEOUT_S = 120
    after = _upload(user, "after.md", HANDBOOK.encode() + b"\n\nAfter.")
    services.file_ingest(file_id=after.pk)
    after.refresh_from_db()
    assert after.status == KnowledgeFile.Status.READY
