"""Extraction in a child process with a time limit.

A parser stuck in one call (pypdf inflating an 87 KB PDF into ~30 MB of text, for one) cannot
be interrupted inside a thread, and held an ingest worker's thread for over ten minutes. Here
each calling thread keeps one spawned child (never forked: the parent may run JAX) that does
the extraction; past the limit the child is killed and the file fails with a clear error."""

from __future__ import annotations

import atexit
import multiprocessing
import threading

from workers.ingest.errors import ExtractionTimedOut
from workers.ingest.extract import DEFAULT_MAX_CHARACTERS, Document, extract_document

_local = threading.local()
_pools: list = []


def _pool():
    pool = getattr(_local, "pool", None)
    if pool is None:
        pool = multiprocessing.get_context("spawn").Pool(processes=1, maxtasksperchild=100)
        _local.pool = pool
        _pools.append(pool)
    return pool


@atexit.register
def _close_pools() -> None:
    # Ended before the interpreter tears modules down (Pool.__del__ would run too late).
    for pool in _pools:
        pool.terminate()


def extract_document_isolated(
    filename: str, data: bytes, *, timeout_s: float, max_characters: int = DEFAULT_MAX_CHARACTERS
) -> Document:
    """`extract_document` in this thread's child process; ExtractionTimedOut past `timeout_s`.
    IngestErrors raised by the extraction come back as they were raised."""
    pending = _pool().apply_async(extract_document, (filename, data), {"max_characters": max_characters})
    try:
        return pending.get(timeout=timeout_s)
    except multiprocessing.TimeoutError:
        _local.pool.terminate()
        _pools.remove(_local.pool)
        _local.pool = None
        raise ExtractionTimedOut(
            f"Reading “{filename}” took longer than {timeout_s:g} seconds, so it was stopped. "
            "The file may be damaged or built to expand enormously; try a simpler copy of it."
        ) from None
