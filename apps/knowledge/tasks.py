"""Thin Celery tasks; the router sends everything named apps.knowledge.tasks.* to `ingest`, except
the beat check reap_* (to `default`, so a long ingest backlog cannot hold it up)."""

from celery import shared_task
from django.db import InterfaceError, OperationalError

from apps.knowledge import services


@shared_task(
    name="apps.knowledge.tasks.ingest_file",
    autoretry_for=(OperationalError, InterfaceError),
    retry_backoff=5,
    max_retries=5,
)
def ingest_file(file_id: str) -> dict:
    file = services.file_ingest(file_id=file_id)
    if file is None:
        return {"file_id": file_id, "status": "skipped"}
    return {"file_id": file_id, "status": file.status, "chunks": file.chunks_done, "error": file.error_code}


@shared_task(name="apps.knowledge.tasks.reap_stalled_files")
def reap_stalled_files() -> int:
    return len(services.files_reap_stalled())
