"""Extraction in a child process: the same document as in-process, errors as raised, and a
parser that runs past the time limit is stopped (the child killed) with a clear error."""

import time

import pytest

from workers.ingest import ExtractionTimedOut, TooMuchText, extract_document
from workers.ingest.isolated import extract_document_isolated
from workers.ingest.tests.pdf_factory import make_pdf

TEXT = ("Liminal reads your files in a child process.\n\n" * 20).encode()


def test_the_child_extracts_what_this_process_would():
    assert extract_document_isolated("notes.txt", TEXT, timeout_s=60) == extract_document("notes.txt", TEXT)


def test_too_much_text_is_refused_in_the_child_and_in_process():
    for extract in (extract_document, lambda *a, **k: extract_document_isolated(*a, timeout_s=60, **k)):
        with pytest.raises(TooMuchText) as refused:
            extract("notes.txt", TEXT, max_characters=200)
        assert "more than 200 characters" in refused.value.message and refused.value.code == "too_much_text"


def test_a_slow_extraction_is_stopped_at_the_limit_and_the_next_one_works():
    extract_document_isolated("warm.txt", TEXT, timeout_s=60)  # the child is up
    slow = make_pdf([[f"Line {n} of a page that takes the PDF parser a while to read." for n in range(6000)]] * 8)
    started = time.monotonic()
    with pytest.raises(ExtractionTimedOut) as stopped:
        extract_document_isolated("slow.pdf", slow, timeout_s=0.5)
    assert time.monotonic() - started < 5
    assert "took longer than 0.5 seconds" in stopped.value.message and stopped.value.code == "extraction_timeout"
    # A fresh child takes the next file.
    assert extract_document_isolated("notes.txt", TEXT, timeout_s=60).text.startswith("Liminal reads")
