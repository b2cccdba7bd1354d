"""Split a `Document` into overlapping, token-bounded chunks along its natural boundaries.

The document is first cut into small units (sentences of paragraphs, lines of code and records,
whole headings); a unit longer than the target is cut further (lines, then words, then
characters). Units are packed greedily up to `target_tokens`; a chunk prefers to end at a
paragraph boundary once it is at least half full, always ends before a new heading, and the next
chunk repeats up to `overlap_tokens` of trailing sentences from the previous one (never across a
heading). Every chunk is a contiguous span of `Document.text`, so `char_start`/`char_end` point
back into the document. The output is a pure function of the input and parameters, which keeps
re-ingestion idempotent.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from workers.ingest.extract import Block, BlockKind, Document

# Bump when a change to this module would produce different chunks for the same input, so stored
# chunks made by an older version can be recognised and rebuilt.
CHUNKING_VERSION = 1

DEFAULT_TARGET_TOKENS = 200
DEFAULT_OVERLAP_TOKENS = 40
# A chunk may end at a paragraph boundary rather than mid-paragraph once it is this full.
_MIN_FILL_FOR_PARAGRAPH_CUT = 0.5
_MAX_CHARACTERS_PER_TOKEN = 32

TokenCounter = Callable[[str], int]


@dataclass(frozen=True)
class Chunk:
    ordinal: int
    text: str
    token_count: int
    char_start: int
    char_end: int
    heading_path: tuple[str, ...]
    page_start: int | None
    page_end: int | None
    line_start: int | None
    line_end: int | None

    @property
    def location(self) -> str:
        """Where the chunk is, for a citation: "page 3, Methods › Data" or "lines 10–24"."""
        parts = []
        if self.page_start is not None:
            if self.page_end is None or self.page_end == self.page_start:
                parts.append(f"page {self.page_start}")
            else:
                parts.append(f"pages {self.page_start}–{self.page_end}")
        if self.heading_path:
            parts.append(" › ".join(self.heading_path))
        if self.page_start is None and self.line_start is not None:
            if self.line_end is None or self.line_end == self.line_start:
                parts.append(f"line {self.line_start}")
            else:
                parts.append(f"lines {self.line_start}–{self.line_end}")
        return ", ".join(parts)

    def metadata(self) -> dict:
        """JSON-serialisable location fields, for storing next to the chunk row."""
        return {
            "heading_path": list(self.heading_path),
            "page_start": self.page_start,
            "page_end": self.page_end,
            "line_start": self.line_start,
            "line_end": self.line_end,
            "location": self.location,
        }


@dataclass(frozen=True)
class _Unit:
    char_start: int
    char_end: int
    tokens: int
    is_heading: bool
    starts_block: bool
    heading_path: tuple[str, ...]
    page: int | None
    line_start: int | None
    line_end: int | None


def chunk_document(
    document: Document,
    count_tokens: TokenCounter,
    *,
    target_tokens: int = DEFAULT_TARGET_TOKENS,
    overlap_tokens: int = DEFAULT_OVERLAP_TOKENS,
    max_tokens: int | None = None,
) -> list[Chunk]:
    """Chunks of at most `max_tokens` tokens (default: `target_tokens`) as `count_tokens` counts
    them; pass the encoder's limit (`encoder.max_text_tokens`) so no chunk is ever truncated.
    """
    max_tokens = target_tokens if max_tokens is None else max_tokens
    if not 0 < target_tokens <= max_tokens:
        raise ValueError("need 0 < target_tokens <= max_tokens")
    if not 0 <= overlap_tokens < target_tokens:
        raise ValueError("need 0 <= overlap_tokens < target_tokens")
    units = []
    for block in document.blocks:
        units.extend(_block_units(document.text, block, count_tokens, target_tokens))
    spans = _pack(units, target_tokens, overlap_tokens)
    chunks: list[Chunk] = []
    for span in spans:
        _emit(document.text, span, count_tokens, max_tokens, chunks)
    return chunks


# Units ----------------------------------------------------------------------------------------

_SENTENCE_BREAK = re.compile(r"[.!?…。！？]+[\"'”’)\]]*(\s+)(?=[^a-z\s])")
_LINE = re.compile(r"[^\n]+")
_WORD = re.compile(r"\S+")


def _sentence_spans(text: str, start: int, end: int) -> list[tuple[int, int]]:
    spans, position = [], start
    for match in _SENTENCE_BREAK.finditer(text, start, end):
        spans.append((position, match.start(1)))
        position = match.end(1)
    spans.append((position, end))
    return spans


def _pattern_spans(pattern: re.Pattern) -> Callable[[str, int, int], list[tuple[int, int]]]:
    def spans(text: str, start: int, end: int) -> list[tuple[int, int]]:
        return [match.span() for match in pattern.finditer(text, start, end)]

    return spans


_line_spans = _pattern_spans(_LINE)
_word_spans = _pattern_spans(_WORD)


def _strip_span(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _bounded_pieces(
    text: str,
    start: int,
    end: int,
    limit: int,
    count_tokens: TokenCounter,
    splitters: Sequence[Callable[[str, int, int], list[tuple[int, int]]]],
) -> list[tuple[int, int, int]]:
    """(start, end, tokens) spans covering text[start:end], each at most `limit` tokens."""
    start, end = _strip_span(text, start, end)
    if start == end:
        return []
    tokens = count_tokens(text[start:end])
    if tokens <= limit:
        return [(start, end, tokens)]
    for position, splitter in enumerate(splitters):
        parts = splitter(text, start, end)
        if len(parts) > 1:
            pieces = []
            for part_start, part_end in parts:
                pieces.extend(
                    _bounded_pieces(text, part_start, part_end, limit, count_tokens, splitters[position + 1 :])
                )
            return pieces
    return _character_pieces(text, start, end, limit, count_tokens)


def _character_pieces(
    text: str, start: int, end: int, limit: int, count_tokens: TokenCounter
) -> list[tuple[int, int, int]]:
    """Cut an unbreakable run (a very long "word") into the longest prefixes that fit."""
    pieces = []
    previous_length = 0
    while start < end:
        # No tokenizer packs more than a few dozen characters into one token, so searching a
        # window keeps long runs (base64 blobs) linear; a piece may end up short, never too long.
        low, high = start + 1, min(end, start + limit * _MAX_CHARACTERS_PER_TOKEN)
        # Pieces of one run tend to be alike: search near the last one's length when it can.
        likely_end = start + 2 * previous_length
        if previous_length and likely_end < high and count_tokens(text[start:likely_end]) > limit:
            high = likely_end
        while low < high:
            middle = (low + high + 1) // 2
            if count_tokens(text[start:middle]) <= limit:
                low = middle
            else:
                high = middle - 1
        pieces.append((start, low, count_tokens(text[start:low])))
        previous_length = low - start
        start = low
    return pieces


def _block_units(text: str, block: Block, count_tokens: TokenCounter, limit: int) -> list[_Unit]:
    if block.kind == BlockKind.HEADING:
        spans = [(block.char_start, block.char_end)]
        splitters = [_word_spans]
    elif block.kind == BlockKind.PARAGRAPH:
        spans = _sentence_spans(text, block.char_start, block.char_end)
        splitters = [_line_spans, _word_spans]
    else:
        spans = _line_spans(text, block.char_start, block.char_end)
        splitters = [_word_spans]
    units = []
    line, line_position = block.line, block.char_start
    for span_start, span_end in spans:
        for start, end, tokens in _bounded_pieces(text, span_start, span_end, limit, count_tokens, splitters):
            line_start = line_end = None
            if line is not None:
                line += text.count("\n", line_position, start)
                line_position = start
                line_start, line_end = line, line + text.count("\n", start, end)
            units.append(
                _Unit(
                    char_start=start,
                    char_end=end,
                    tokens=tokens,
                    is_heading=block.kind == BlockKind.HEADING,
                    starts_block=not units,
                    heading_path=block.heading_path,
                    page=block.page,
                    line_start=line_start,
                    line_end=line_end,
                )
            )
    return units


# Packing --------------------------------------------------------------------------------------


def _total(units: Sequence[_Unit]) -> int:
    return sum(unit.tokens for unit in units)


def _pack(units: list[_Unit], target: int, overlap: int) -> list[list[_Unit]]:
    spans: list[list[_Unit]] = []
    current: list[_Unit] = []
    repeated = 0  # how many units at the start of `current` repeat the previous chunk
    index = 0
    while index < len(units):
        unit = units[index]
        if unit.is_heading and any(not member.is_heading for member in current):
            # A new section: close the chunk, and drop a repeated tail rather than let it
            # cross the heading.
            if any(not member.is_heading for member in current[repeated:]):
                spans.append(current)
            current, repeated = [], 0
            continue
        if current and _total(current) + unit.tokens > target:
            cut = _choose_cut(current, repeated, target)
            emitted, carried = current[:cut], current[cut:]
            spans.append(emitted)
            tail = _overlap_tail(emitted, overlap)
            while tail and _total(tail) + _total(carried) + unit.tokens > target:
                tail = tail[1:]
            current, repeated = tail + carried, len(tail)
            continue
        current.append(unit)
        index += 1
    if current[repeated:]:
        spans.append(current)
    return spans


def _choose_cut(current: list[_Unit], repeated: int, target: int) -> int:
    """Where to end the chunk: the last paragraph boundary once half full, else everything.
    The chunk always keeps at least one unit that the previous chunk did not have."""
    running = _total(current[: repeated + 1])
    best = len(current)
    for position in range(repeated + 1, len(current)):
        if (
            current[position].starts_block
            and not current[position - 1].is_heading
            and running >= _MIN_FILL_FOR_PARAGRAPH_CUT * target
        ):
            best = position
        running += current[position].tokens
    return best


def _overlap_tail(emitted: list[_Unit], overlap: int) -> list[_Unit]:
    tail: list[_Unit] = []
    for unit in reversed(emitted):
        if unit.is_heading or _total(tail) + unit.tokens > overlap:
            break
        tail.insert(0, unit)
    return tail


def _emit(
    text: str,
    units: list[_Unit],
    count_tokens: TokenCounter,
    max_tokens: int,
    chunks: list[Chunk],
) -> None:
    start, end = units[0].char_start, units[-1].char_end
    chunk_text = text[start:end]
    tokens = count_tokens(chunk_text)
    if tokens > max_tokens and len(units) > 1:
        # Token counts need not add up exactly across unit joins (tokenizer-dependent); halve
        # rather than exceed the encoder's limit.
        middle = len(units) // 2
        _emit(text, units[:middle], count_tokens, max_tokens, chunks)
        _emit(text, units[middle:], count_tokens, max_tokens, chunks)
        return
    pages = [unit.page for unit in units if unit.page is not None]
    lines_start = [unit.line_start for unit in units if unit.line_start is not None]
    lines_end = [unit.line_end for unit in units if unit.line_end is not None]
    chunks.append(
        Chunk(
            ordinal=len(chunks),
            text=chunk_text,
            token_count=tokens,
            char_start=start,
            char_end=end,
            heading_path=units[-1].heading_path,
            page_start=min(pages) if pages else None,
            page_end=max(pages) if pages else None,
            line_start=min(lines_start) if lines_start else None,
            line_end=max(lines_end) if lines_end else None,
        )
    )
