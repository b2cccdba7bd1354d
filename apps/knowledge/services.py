"""Writes for files, contexts, ingestion and knowledge gaps."""

import hashlib
import logging
import os
import secrets
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.models import F
from django.db.models.functions import Lower
from django.utils import timezone

from apps.knowledge.embedding import current_encoder
from apps.knowledge.filenames import InvalidFileName, clean_file_name, clean_folder, numbered
from apps.knowledge.models import Chunk, Context, ContextFile, ContextFolder, KnowledgeFile, KnowledgeGap
from liminal.api import ApiError, Conflict
from workers.ingest import (
    ALLOWED_EXTENSIONS,
    CHUNKING_VERSION,
    CorruptFile,
    IngestError,
    TooMuchText,
    UnsupportedFileType,
    chunk_document,
    detect_file_type,
)
from workers.ingest.isolated import extract_document_isolated

logger = logging.getLogger(__name__)

# How many "name (n).ext" variants to try before giving up on a name.
MAX_NAME_VARIANTS = 1000


class UploadTooLarge(ApiError):
    def __init__(self, size: int | None = None):
        limit = settings.MAX_UPLOAD_BYTES
        super().__init__(
            413,
            "payload_too_large",
            f"The file is larger than the upload limit of {_human_bytes(limit)}.",
            {"max_upload_bytes": limit, "size_bytes": size},
        )


class KnowledgeFull(IngestError):
    code = "knowledge_full"


class NoText(IngestError):
    code = "no_text"


class NotFound(ApiError):
    def __init__(self, what: str):
        super().__init__(404, "not_found", f"{what} not found.")


def _human_bytes(count: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024
    return str(count)


# ---------------------------------------------------------------- Files


def user_files_dir(user_id) -> Path:
    return Path(settings.SHARED_FS_ROOT) / "users" / str(user_id) / "files"


def file_absolute_path(file: KnowledgeFile) -> Path:
    root = Path(settings.SHARED_FS_ROOT).resolve()
    path = (root / file.storage_path).resolve()
    if not path.is_relative_to(user_files_dir(file.owner_id).resolve()):
        raise RuntimeError(f"file {file.pk} points outside its owner's directory")
    return path


def _check_content(name: str, content: bytes) -> str:
    if len(content) > settings.MAX_UPLOAD_BYTES:
        raise UploadTooLarge(len(content))
    if not content:
        raise ApiError(400, "empty_file", f"“{name}” is empty.")
    try:
        return str(detect_file_type(name, content))
    except UnsupportedFileType as exc:
        raise ApiError(415, exc.code, exc.message, {"allowed_extensions": list(ALLOWED_EXTENSIONS)}) from exc
    except CorruptFile as exc:
        raise ApiError(400, exc.code, exc.message) from exc


def _uuids(values: Iterable, what: str) -> list[str]:
    try:
        return list(dict.fromkeys(str(uuid.UUID(str(value))) for value in values or ()))
    except ValueError as exc:
        raise NotFound(what) from exc


def _owned_contexts(actor, context_ids: Iterable) -> list[Context]:
    context_ids = _uuids(context_ids, "Context")
    if not context_ids:
        return []
    contexts = list(Context.objects.filter(owner=actor, pk__in=context_ids))
    if len(contexts) != len(context_ids):
        raise NotFound("Context")
    return contexts


def _write_exclusive(directory: Path, name: str, content: bytes) -> Path | None:
    """Write `content` as directory/name unless that name exists; None if it does.

    The bytes go to a temporary file first and are linked into place only when complete, so a
    reader never sees a half-written file and an existing file is never replaced.
    """
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / name
    if target.exists():
        return None
    temporary = directory / f".upload-{secrets.token_hex(8)}.part"
    try:
        with open(temporary, "xb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, target)
        except FileExistsError:
            return None
    finally:
        temporary.unlink(missing_ok=True)
    return target


def _name_taken(owner, name: str) -> bool:
    return (
        KnowledgeFile.objects.annotate(lower_name=Lower("name")).filter(owner=owner, lower_name=name.lower()).exists()
    )


def file_upload(
    *,
    actor,
    name: str,
    content: bytes,
    folder: str = "",
    content_type: str = "",
    context_ids: Iterable = (),
) -> KnowledgeFile:
    """Store an uploaded file for `actor` and queue its ingestion.

    Either everything happens (file on disk, row, context links, task queued after commit) or
    nothing does: every check runs before the first byte is written, and a failure after that
    removes the file again.
    """
    name = clean_file_name(name)
    folder = clean_folder(folder)
    kind = _check_content(name, content)
    sha256 = hashlib.sha256(content).hexdigest()
    existing = KnowledgeFile.objects.filter(owner=actor, sha256=sha256).first()
    if existing is not None:
        raise _duplicate(existing)
    contexts = _owned_contexts(actor, context_ids)

    directory = user_files_dir(actor.pk)
    written: Path | None = None
    try:
        with transaction.atomic():
            for number in range(1, MAX_NAME_VARIANTS + 1):
                candidate = name if number == 1 else numbered(name, number)
                if _name_taken(actor, candidate):
                    continue
                written = _write_exclusive(directory, candidate, content)
                if written is not None:
                    break
            else:
                raise Conflict(f"Too many files are already called “{name}”; rename it and try again.")
            file = KnowledgeFile.objects.create(
                owner=actor,
                name=written.name,
                folder=folder,
                storage_path=str(written.relative_to(Path(settings.SHARED_FS_ROOT))),
                kind=kind,
                content_type=(content_type or "")[:100],
                size_bytes=len(content),
                sha256=sha256,
            )
            ContextFile.objects.bulk_create([ContextFile(context=context, file=file) for context in contexts])
            _queue_ingestion(file)
    except IntegrityError as exc:
        if written is not None:
            written.unlink(missing_ok=True)
        existing = KnowledgeFile.objects.filter(owner=actor, sha256=sha256).first()
        if existing is not None:  # the same content was uploaded concurrently
            raise _duplicate(existing) from exc
        raise Conflict("Another upload with this name finished at the same moment; try again.") from exc
    except BaseException:
        if written is not None:
            written.unlink(missing_ok=True)
        raise
    return file


def _duplicate(existing: KnowledgeFile) -> Conflict:
    conflict = Conflict(
        f"You already uploaded this file as “{existing.name}”.",
        {"file_id": str(existing.pk), "name": existing.name},
    )
    conflict.error_code = "duplicate_file"
    return conflict


def _queue_ingestion(file: KnowledgeFile) -> None:
    from apps.knowledge.tasks import ingest_file

    file_id = str(file.pk)
    transaction.on_commit(lambda: ingest_file.delay(file_id))


def files_reap_stalled(*, now=None) -> list[str]:
    """Beat's check: files queued or processing without progress for KNOWLEDGE_STALLED_AFTER_SECONDS
    are sent to the ingest queue again. A Valkey crash can lose a queued file's message (it keeps
    only snapshots), and a worker that died mid-file and was not started again returns nothing:
    the files KnowledgeFile.is_stalled calls stalled.
    Ingestion is idempotent and takes a per-file lock, so a file that was only waiting its turn,
    or is still being ingested, ingests once. Each file sent is stamped, so it is sent again only
    once per such window."""
    now = now or timezone.now()
    stalled = KnowledgeFile.objects.filter(
        status__in=KnowledgeFile.PENDING, updated_at__lt=KnowledgeFile.stall_cutoff(now)
    )
    resent = []
    for file in stalled:
        with transaction.atomic():
            KnowledgeFile.objects.filter(pk=file.pk).update(updated_at=now)
            _queue_ingestion(file)
        resent.append(str(file.pk))
    return resent


@transaction.atomic
def file_delete(*, file: KnowledgeFile) -> None:
    """Delete the file, its chunks and its context memberships; the bytes go once that commits."""
    path = file_absolute_path(file)
    file.delete()

    def remove_bytes():
        try:
            path.unlink(missing_ok=True)
        except OSError:
            logger.exception("Could not remove %s after deleting its file row", path)

    transaction.on_commit(remove_bytes)


@transaction.atomic
def file_reingest(*, file: KnowledgeFile) -> KnowledgeFile:
    """Queue the file for ingestion again: after a failure, after a worker died mid-run (the file
    looks stalled), or to pick up a new encoder or chunking. A running ingestion is left alone."""
    locked = KnowledgeFile.objects.select_for_update().get(pk=file.pk)
    if locked.status != KnowledgeFile.Status.PROCESSING or locked.is_stalled:
        locked.status = KnowledgeFile.Status.QUEUED
        locked.phase = KnowledgeFile.Phase.WAITING
        locked.error_code = ""
        locked.error_message = ""
        locked.save(update_fields=["status", "phase", "error_code", "error_message", "updated_at"])
    _queue_ingestion(locked)
    return locked


@transaction.atomic
def file_move(*, file: KnowledgeFile, folder: str) -> KnowledgeFile:
    file.folder = clean_folder(folder)
    file.save(update_fields=["folder", "updated_at"])
    return file


# ---------------------------------------------------------------- Ingestion


@contextmanager
def _ingest_lock(file_id) -> Iterator[bool]:
    """A PostgreSQL session lock per file: one ingestion at a time, released if the worker dies."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(hashtext('knowledge.ingest'), hashtext(%s))", [str(file_id)])
        acquired = cursor.fetchone()[0]
    try:
        yield acquired
    finally:
        if acquired:
            try:
                with connection.cursor() as cursor:
                    cursor.execute(
                        "SELECT pg_advisory_unlock(hashtext('knowledge.ingest'), hashtext(%s))", [str(file_id)]
                    )
            except DatabaseError:  # the connection is gone, and the session's locks with it
                logger.warning("Could not release the ingestion lock of file %s", file_id, exc_info=True)


def _embedding_input(chunk) -> str:
    """What the encoder sees: the chunk, preceded by its section heading unless it starts with it."""
    heading = chunk.heading_path[-1] if chunk.heading_path else ""
    if heading and not chunk.text.lstrip("#* ").startswith(heading):
        return f"{heading}\n{chunk.text}"
    return chunk.text


def _set_file(file_id, **fields) -> int:
    return KnowledgeFile.objects.filter(pk=file_id).update(updated_at=timezone.now(), **fields)


def _fail(file_id, code: str, message: str, *, drop_chunks: bool) -> None:
    with transaction.atomic():
        if drop_chunks:
            Chunk.objects.filter(file_id=file_id).delete()
        _set_file(
            file_id,
            status=KnowledgeFile.Status.FAILED,
            phase=KnowledgeFile.Phase.DONE,
            error_code=code[:64],
            error_message=message,
            chunks_done=Chunk.objects.filter(file_id=file_id).count(),
        )


def _is_current(file: KnowledgeFile, encoder_id: str) -> bool:
    return (
        file.status == KnowledgeFile.Status.READY
        and file.encoder_id == encoder_id
        and file.chunking_version == CHUNKING_VERSION
        and Chunk.objects.filter(file_id=file.pk, encoder_id=encoder_id).count() == file.chunks_total
    )


def file_ingest(*, file_id, batch_size: int | None = None) -> KnowledgeFile | None:
    """Extract, chunk, embed and store one file. Idempotent and resumable.

    Chunking is deterministic, so a chunk already stored with the same content and encoder is
    kept, and only missing or stale chunks are embedded: re-running after a crash continues
    where the last run stopped, and re-running a finished file changes nothing. Returns None when
    the file is gone or another worker is ingesting it.
    """
    batch_size = batch_size or settings.KNOWLEDGE_EMBED_BATCH_SIZE
    with _ingest_lock(file_id) as acquired:
        if not acquired:
            logger.info("File %s is being ingested by another worker", file_id)
            return None
        file = KnowledgeFile.objects.filter(pk=file_id).first()
        if file is None:
            return None
        encoder = current_encoder()
        if _is_current(file, encoder.encoder_id):
            return file
        _set_file(
            file_id,
            status=KnowledgeFile.Status.PROCESSING,
            phase=KnowledgeFile.Phase.EXTRACTING,
            attempts=F("attempts") + 1,
            ingest_started_at=timezone.now(),
            error_code="",
            error_message="",
        )
        try:
            _ingest(file, encoder, batch_size)
        except IngestError as exc:
            _fail(file_id, exc.code, exc.message, drop_chunks=True)
        except Exception as exc:
            # Chunks stored so far stay: a retry resumes from them.
            logger.exception("Ingestion of file %s failed", file_id)
            _fail(
                file_id,
                "internal_error",
                f"Ingestion stopped unexpectedly ({type(exc).__name__}); retry it.",
                drop_chunks=False,
            )
            raise
        return KnowledgeFile.objects.filter(pk=file_id).first()


def _ingest(file: KnowledgeFile, encoder, batch_size: int) -> None:
    try:
        content = file_absolute_path(file).read_bytes()
    except FileNotFoundError as exc:
        raise IngestError(f"The stored copy of “{file.name}” is missing; upload it again.") from exc
    if hashlib.sha256(content).hexdigest() != file.sha256:
        raise CorruptFile(f"The stored copy of “{file.name}” has changed since it was uploaded; upload it again.")
    document = extract_document_isolated(
        file.name,
        content,
        timeout_s=settings.INGEST_EXTRACT_TIMEOUT_S,
        max_characters=settings.INGEST_MAX_TEXT_CHARS,
    )
    chunks = chunk_document(
        document,
        encoder.count_tokens,
        target_tokens=min(settings.KNOWLEDGE_CHUNK_TARGET_TOKENS, encoder.max_text_tokens),
        overlap_tokens=settings.KNOWLEDGE_CHUNK_OVERLAP_TOKENS,
        max_tokens=encoder.max_text_tokens,
    )
    if not chunks:
        hint = " Scanned PDFs need OCR, which is not supported yet." if file.kind == KnowledgeFile.Kind.PDF else ""
        raise NoText(f"No text could be extracted from “{file.name}”.{hint}")
    if len(chunks) > settings.INGEST_MAX_CHUNKS_PER_FILE:
        raise TooMuchText(
            f"“{file.name}” would make {len(chunks):,} passages, more than the {settings.INGEST_MAX_CHUNKS_PER_FILE:,} "
            "one file may add; split it into smaller files."
        )
    others = Chunk.objects.filter(owner_id=file.owner_id).exclude(file_id=file.pk).count()
    if others + len(chunks) > settings.INGEST_MAX_CHUNKS_PER_USER:
        raise KnowledgeFull(
            f"“{file.name}” would take your knowledge to {others + len(chunks):,} passages, past your limit of "
            f"{settings.INGEST_MAX_CHUNKS_PER_USER:,}; delete files you no longer need first."
        )
    inputs = [_embedding_input(chunk) for chunk in chunks]
    digests = [hashlib.sha256(text.encode()).hexdigest() for text in inputs]

    with transaction.atomic():
        stored = dict(
            Chunk.objects.filter(file_id=file.pk, encoder_id=encoder.encoder_id).values_list(
                "ordinal", "content_sha256"
            )
        )
        kept = {ordinal for ordinal, digest in stored.items() if ordinal < len(chunks) and digests[ordinal] == digest}
        Chunk.objects.filter(file_id=file.pk).exclude(ordinal__in=kept, encoder_id=encoder.encoder_id).delete()
        _set_file(
            file.pk,
            phase=KnowledgeFile.Phase.EMBEDDING,
            chunks_total=len(chunks),
            chunks_done=len(kept),
            title=(document.title or "")[:500],
            page_count=document.page_count,
        )

    missing_chunks = [chunk for chunk in chunks if chunk.ordinal not in kept]
    for start in range(0, len(missing_chunks), batch_size):
        batch = missing_chunks[start : start + batch_size]
        vectors = encoder.encode([inputs[chunk.ordinal] for chunk in batch])
        with transaction.atomic():
            if not KnowledgeFile.objects.select_for_update().filter(pk=file.pk).exists():
                return  # deleted while we were embedding; its chunks went with it
            Chunk.objects.bulk_create(
                [
                    Chunk(
                        owner_id=file.owner_id,
                        file_id=file.pk,
                        ordinal=chunk.ordinal,
                        text=chunk.text,
                        heading=" › ".join(chunk.heading_path)[:1000],
                        token_count=chunk.token_count,
                        char_start=chunk.char_start,
                        char_end=chunk.char_end,
                        page_start=chunk.page_start,
                        page_end=chunk.page_end,
                        line_start=chunk.line_start,
                        line_end=chunk.line_end,
                        location=chunk.location[:1100],
                        content_sha256=digests[chunk.ordinal],
                        embedding=vector,
                        encoder_id=encoder.encoder_id,
                        embedding_dim=len(vector),
                    )
                    for chunk, vector in zip(batch, vectors, strict=True)
                ]
            )
            _set_file(file.pk, chunks_done=F("chunks_done") + len(batch))

    _set_file(
        file.pk,
        status=KnowledgeFile.Status.READY,
        phase=KnowledgeFile.Phase.DONE,
        chunks_done=len(chunks),
        encoder_id=encoder.encoder_id,
        chunking_version=CHUNKING_VERSION,
        ingested_at=timezone.now(),
    )


# ---------------------------------------------------------------- Contexts


def _context_name_taken(owner, name: str, exclude_pk=None) -> bool:
    contexts = Context.objects.annotate(lower_name=Lower("name")).filter(owner=owner, lower_name=name.lower())
    if exclude_pk is not None:
        contexts = contexts.exclude(pk=exclude_pk)
    return contexts.exists()


def _clean_context_name(name: str) -> str:
    name = " ".join((name or "").split())
    if not name:
        raise ApiError(400, "validation_error", "name: A context needs a name.", {"name": ["This field is required."]})
    if len(name) > 200:
        raise ApiError(400, "validation_error", "name: At most 200 characters.", {"name": ["At most 200 characters."]})
    return name


def _owned_files(actor, file_ids: Iterable) -> list[KnowledgeFile]:
    file_ids = _uuids(file_ids, "File")
    files = list(KnowledgeFile.objects.filter(owner=actor, pk__in=file_ids))
    if len(files) != len(file_ids):
        raise NotFound("File")
    return files


@transaction.atomic
def context_create(
    *, actor, name: str, description: str = "", file_ids: Iterable = (), folders: Iterable[str] = ()
) -> Context:
    name = _clean_context_name(name)
    if _context_name_taken(actor, name):
        raise Conflict(f"You already have a context called “{name}”.")
    files = _owned_files(actor, file_ids)
    context = Context.objects.create(owner=actor, name=name, description=(description or "").strip())
    ContextFile.objects.bulk_create([ContextFile(context=context, file=file) for file in files])
    for folder in folders or ():
        context_folder_add(context=context, path=folder)
    return context


@transaction.atomic
def context_update(*, context: Context, name: str | None = None, description: str | None = None) -> Context:
    if name is not None:
        name = _clean_context_name(name)
        if _context_name_taken(context.owner_id, name, exclude_pk=context.pk):
            raise Conflict(f"You already have a context called “{name}”.")
        context.name = name
    if description is not None:
        context.description = description.strip()
    context.save()
    return context


@transaction.atomic
def context_delete(*, context: Context) -> None:
    context.delete()


@transaction.atomic
def context_file_add(*, context: Context, file: KnowledgeFile) -> bool:
    """Add a file to a context; False when it was already there."""
    if file.owner_id != context.owner_id:
        raise NotFound("File")
    _, created = ContextFile.objects.get_or_create(context=context, file=file)
    if created:
        Context.objects.filter(pk=context.pk).update(updated_at=timezone.now())
    return created


@transaction.atomic
def context_file_remove(*, context: Context, file: KnowledgeFile) -> bool:
    deleted, _ = ContextFile.objects.filter(context=context, file=file).delete()
    return bool(deleted)


@transaction.atomic
def context_folder_add(*, context: Context, path: str) -> ContextFolder:
    path = clean_folder(path)
    if not path:
        raise InvalidFileName("Name a folder; to include every file, add the files themselves.")
    folder, _ = ContextFolder.objects.get_or_create(context=context, path=path)
    return folder


@transaction.atomic
def context_folder_remove(*, context: Context, path: str) -> bool:
    deleted, _ = ContextFolder.objects.filter(context=context, path=clean_folder(path)).delete()
    return bool(deleted)


# ---------------------------------------------------------------- Knowledge gaps


@transaction.atomic
def knowledge_gap_record(
    *, actor, query: str, context_ids: Iterable = (), conversation_id=None, best_score: float | None = None
) -> KnowledgeGap:
    """Remember a question the actor's contexts could not answer. Contexts the actor does not own
    are ignored, never linked."""
    gap = KnowledgeGap.objects.create(
        owner=actor,
        query=(query or "").strip()[:4000],
        conversation_id=conversation_id,
        best_score=best_score,
    )
    context_ids = [str(context_id) for context_id in context_ids or ()]
    if context_ids:
        gap.contexts.set(Context.objects.filter(owner=actor, pk__in=context_ids))
    return gap


@transaction.atomic
def knowledge_gap_resolve(*, gap: KnowledgeGap) -> KnowledgeGap:
    if gap.resolved_at is None:
        gap.resolved_at = timezone.now()
        gap.save(update_fields=["resolved_at"])
    return gap
