"""Turn an uploaded file into a `Document`: plain text split into blocks (headings, paragraphs,
code, records) that remember where they came from (page, heading path, source line), so a
citation can say "file, page 3" or "file, Setup › Install".
"""

from __future__ import annotations

import csv
import io
import json
import re
import statistics
from contextvars import ContextVar
from dataclasses import dataclass, field
from html.parser import HTMLParser

from workers.ingest.errors import CorruptFile, TooMuchText
from workers.ingest.sniff import FileKind, decode_text, detect_file_type, open_pdf, parse_json

BLOCK_SEPARATOR = "\n\n"


class BlockKind:
    HEADING = "heading"
    PARAGRAPH = "paragraph"
    CODE = "code"
    RECORD = "record"


@dataclass(frozen=True)
class Block:
    """A paragraph-like unit of a document.

    `char_start`/`char_end` index `Document.text`. `heading_path` lists the enclosing headings,
    outermost first (a heading's own path ends with itself). `page` is 1-based (PDF only); `line`
    is the 1-based source line the block starts on, where the format has meaningful lines.
    """

    text: str
    kind: str
    heading_path: tuple[str, ...] = ()
    page: int | None = None
    line: int | None = None
    char_start: int = 0
    char_end: int = 0


@dataclass(frozen=True)
class Document:
    kind: FileKind
    text: str
    blocks: tuple[Block, ...]
    title: str | None = None
    page_count: int | None = None


# Text one file may extract to (about 4,000 pages): past it the file fails with a clear error
# instead of filling the index (a 2 MB CSV of 20,000 columns became 38,450 chunks).
DEFAULT_MAX_CHARACTERS = 8_000_000
# The limit of the extraction running in this thread (extract_document sets it per call).
_max_characters: ContextVar[int] = ContextVar("max_characters", default=DEFAULT_MAX_CHARACTERS)


@dataclass
class _DocumentBuilder:
    kind: FileKind
    blocks: list[Block] = field(default_factory=list)
    characters: int = 0

    def add(self, text: str, kind: str, **location) -> None:
        text = text.strip()
        if text:
            self.characters += len(text) + len(BLOCK_SEPARATOR)
            limit = _max_characters.get()
            if self.characters > limit:
                raise TooMuchText(
                    f"The file holds more than {limit:,} characters of text, the most one file may "
                    "add to your knowledge; split it into smaller files."
                )
            self.blocks.append(Block(text=text, kind=kind, **location))

    def build(self, title: str | None = None, page_count: int | None = None) -> Document:
        placed = []
        offset = 0
        for block in self.blocks:
            if placed:
                offset += len(BLOCK_SEPARATOR)
            placed.append(
                Block(
                    text=block.text,
                    kind=block.kind,
                    heading_path=block.heading_path,
                    page=block.page,
                    line=block.line,
                    char_start=offset,
                    char_end=offset + len(block.text),
                )
            )
            offset += len(block.text)
        text = BLOCK_SEPARATOR.join(block.text for block in placed)
        return Document(
            kind=self.kind,
            text=text,
            blocks=tuple(placed),
            title=title.strip() if title and title.strip() else None,
            page_count=page_count,
        )


class _HeadingTrail:
    def __init__(self):
        self._levels: list[tuple[int, str]] = []

    def enter(self, level: int, title: str) -> tuple[str, ...]:
        while self._levels and self._levels[-1][0] >= level:
            self._levels.pop()
        self._levels.append((level, title))
        return self.path

    @property
    def path(self) -> tuple[str, ...]:
        return tuple(title for _, title in self._levels)


def extract_document(filename: str, data: bytes, *, max_characters: int = DEFAULT_MAX_CHARACTERS) -> Document:
    """Sniff `data` against `filename`'s type and extract it; raises IngestError subclasses
    (TooMuchText past `max_characters` of text)."""
    token = _max_characters.set(int(max_characters))
    try:
        return _extract(filename, data)
    finally:
        _max_characters.reset(token)


def _extract(filename: str, data: bytes) -> Document:
    kind = detect_file_type(filename, data)
    if kind is FileKind.PDF:
        return extract_pdf(data, filename)
    text = decode_text(data, filename)
    extractors = {
        FileKind.TEXT: extract_plain_text,
        FileKind.MARKDOWN: extract_markdown,
        FileKind.HTML: extract_html,
        FileKind.CSV: extract_csv,
        FileKind.JSON: extract_json,
    }
    return extractors[kind](text, filename)


# Plain text -----------------------------------------------------------------------------------

_BLANK_LINE_RUN = re.compile(r"\n[ \t]*\n\s*")


def _paragraph_spans(text: str) -> list[tuple[int, int]]:
    spans, start = [], 0
    for separator in _BLANK_LINE_RUN.finditer(text):
        spans.append((start, separator.start()))
        start = separator.end()
    spans.append((start, len(text)))
    return spans


def _line_of(text: str, index: int) -> int:
    return text.count("\n", 0, index) + 1


def extract_plain_text(text: str, filename: str = "file") -> Document:
    builder = _DocumentBuilder(FileKind.TEXT)
    for start, end in _paragraph_spans(text):
        paragraph = text[start:end]
        leading = len(paragraph) - len(paragraph.lstrip())
        builder.add(paragraph, BlockKind.PARAGRAPH, line=_line_of(text, start + leading))
    return builder.build()


# Markdown -------------------------------------------------------------------------------------

_ATX_HEADING = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_SETEXT_UNDERLINE = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_THEMATIC_BREAK = re.compile(r"^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$")


def extract_markdown(text: str, filename: str = "file") -> Document:
    builder = _DocumentBuilder(FileKind.MARKDOWN)
    headings = _HeadingTrail()
    lines = text.split("\n")
    paragraph: list[str] = []
    paragraph_line = 0
    title = None

    def flush_paragraph() -> None:
        builder.add(
            "\n".join(paragraph),
            BlockKind.PARAGRAPH,
            heading_path=headings.path,
            line=paragraph_line,
        )
        paragraph.clear()

    def add_heading(level: int, heading: str, line: int) -> None:
        nonlocal title
        heading = heading.strip()
        if not heading:
            return
        if level == 1 and title is None:
            title = heading
        builder.add(heading, BlockKind.HEADING, heading_path=headings.enter(level, heading), line=line)

    index = _skip_front_matter(lines, builder)
    while index < len(lines):
        line = lines[index]
        line_number = index + 1
        fence = _FENCE.match(line)
        if fence:
            flush_paragraph()
            marker = fence.group(1)
            end = index + 1
            while end < len(lines) and not lines[end].lstrip().startswith(marker):
                end += 1
            code = "\n".join(lines[index : end + 1])
            builder.add(code, BlockKind.CODE, heading_path=headings.path, line=line_number)
            index = end + 1
            continue
        heading = _ATX_HEADING.match(line)
        if heading:
            flush_paragraph()
            add_heading(len(heading.group(1)), heading.group(2) or "", line_number)
        elif paragraph and _SETEXT_UNDERLINE.match(line) and not _is_list_item(paragraph[-1]):
            level = 1 if line.strip().startswith("=") else 2
            heading_text = " ".join(part.strip() for part in paragraph)
            start_line = paragraph_line
            paragraph.clear()
            add_heading(level, heading_text, start_line)
        elif not line.strip() or _THEMATIC_BREAK.match(line):
            flush_paragraph()
        else:
            if not paragraph:
                paragraph_line = line_number
            paragraph.append(line)
        index += 1
    flush_paragraph()
    return builder.build(title=title)


def _is_list_item(line: str) -> bool:
    return bool(re.match(r"^\s*([-*+]|\d+[.)])\s", line))


def _skip_front_matter(lines: list[str], builder: _DocumentBuilder) -> int:
    """Keep YAML front matter as a plain paragraph (its title/tags are worth searching) instead
    of letting its closing `---` turn it into a setext heading."""
    if not lines or lines[0].strip() != "---":
        return 0
    for end in range(1, len(lines)):
        if lines[end].strip() in ("---", "..."):
            builder.add("\n".join(lines[1:end]), BlockKind.PARAGRAPH, line=2)
            return end + 1
    return 0


# HTML -----------------------------------------------------------------------------------------

_SKIPPED_TAGS = frozenset({"script", "style", "noscript", "template", "svg", "math"})
_BLOCK_TAGS = frozenset(
    {
        "address",
        "article",
        "aside",
        "blockquote",
        "body",
        "caption",
        "dd",
        "details",
        "dialog",
        "div",
        "dl",
        "dt",
        "fieldset",
        "figcaption",
        "figure",
        "footer",
        "form",
        "header",
        "hgroup",
        "hr",
        "html",
        "legend",
        "li",
        "main",
        "nav",
        "ol",
        "p",
        "pre",
        "section",
        "summary",
        "table",
        "tbody",
        "td",
        "tfoot",
        "th",
        "thead",
        "tr",
        "ul",
    }
)
_HEADING_LEVELS = {f"h{level}": level for level in range(1, 7)}
_WHITESPACE = re.compile(r"\s+")


class _HtmlTextParser(HTMLParser):
    def __init__(self, builder: _DocumentBuilder):
        super().__init__(convert_charrefs=True)
        self.builder = builder
        self.headings = _HeadingTrail()
        self.skip_depth = 0
        self.pre_depth = 0
        self.in_title = False
        self.title_parts: list[str] = []
        self.parts: list[str] = []
        self.part_line: int | None = None
        self.heading_level: int | None = None
        self.row_has_cell = False

    def handle_starttag(self, tag, attrs):
        if tag in _SKIPPED_TAGS:
            self.skip_depth += 1
            return
        if self.skip_depth:
            return
        if tag == "title":
            self.in_title = True
            return
        if tag in _HEADING_LEVELS:
            self.flush()
            self.heading_level = _HEADING_LEVELS[tag]
        elif tag == "br":
            self.append_text("\n", raw=True)
        elif tag in ("td", "th"):
            if self.row_has_cell:
                self.append_text(" | ", raw=True)
            self.row_has_cell = True
        elif tag in _BLOCK_TAGS:
            self.flush()
            if tag == "tr":
                self.row_has_cell = False
            elif tag == "li":
                self.append_text("- ", raw=True)
            elif tag == "pre":
                self.pre_depth += 1

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in ("br", "hr"):
            self.handle_endtag(tag)

    def handle_endtag(self, tag):
        if tag in _SKIPPED_TAGS:
            self.skip_depth = max(0, self.skip_depth - 1)
            return
        if self.skip_depth:
            return
        if tag == "title":
            self.in_title = False
            return
        if tag in _HEADING_LEVELS and self.heading_level is not None:
            heading = _WHITESPACE.sub(" ", "".join(self.parts)).strip()
            line = self.part_line
            self.parts, self.part_line = [], None
            if heading:
                path = self.headings.enter(self.heading_level, heading)
                self.builder.add(heading, BlockKind.HEADING, heading_path=path, line=line)
            self.heading_level = None
        elif tag in ("td", "th"):
            return
        elif tag in _BLOCK_TAGS:
            if tag == "pre":
                self.flush(kind=BlockKind.CODE)
                self.pre_depth = max(0, self.pre_depth - 1)
            else:
                self.flush()

    def handle_data(self, data):
        if self.skip_depth:
            return
        if self.in_title:
            self.title_parts.append(data)
        else:
            self.append_text(data, raw=bool(self.pre_depth))

    def append_text(self, text: str, raw: bool) -> None:
        if not raw:
            text = _WHITESPACE.sub(" ", text)
        if self.part_line is None and text.strip():
            self.part_line = self.getpos()[0]
        self.parts.append(text)

    def flush(self, kind: str = BlockKind.PARAGRAPH) -> None:
        if self.heading_level is not None:
            return
        text = "".join(self.parts)
        if kind == BlockKind.PARAGRAPH:
            text = "\n".join(line.strip() for line in text.split("\n"))
            text = re.sub(r"\n{2,}", "\n", text)
        if text.strip() not in ("", "-"):
            self.builder.add(text, kind, heading_path=self.headings.path, line=self.part_line)
        self.parts, self.part_line = [], None

    def close(self):
        super().close()
        self.flush()


def extract_html(text: str, filename: str = "file") -> Document:
    builder = _DocumentBuilder(FileKind.HTML)
    parser = _HtmlTextParser(builder)
    parser.feed(text)
    parser.close()
    title = _WHITESPACE.sub(" ", "".join(parser.title_parts)).strip()
    return builder.build(title=title or None)


# PDF ------------------------------------------------------------------------------------------

_SENTENCE_END = re.compile(r"[.!?:;\"”’)]$")


def _pdf_paragraphs(page_text: str) -> list[str]:
    """pypdf rarely leaves blank lines between paragraphs, so also end a paragraph at a line that
    finishes a sentence well short of the page's usual line width (a paragraph's last line)."""
    paragraphs = []
    for chunk in re.split(r"\n[ \t]*\n", page_text):
        lines = [line.rstrip() for line in chunk.split("\n") if line.strip()]
        if not lines:
            continue
        typical_width = statistics.median(len(line) for line in lines)
        current: list[str] = []
        for line in lines:
            current.append(line)
            if _SENTENCE_END.search(line) and len(line) < 0.7 * typical_width:
                paragraphs.append("\n".join(current))
                current = []
        if current:
            paragraphs.append("\n".join(current))
    return paragraphs


def _pdf_outline_starts(reader) -> list[tuple[int, tuple[str, ...]]]:
    """(first page index, heading path) for each bookmark, in page order; [] when the outline is
    missing or unreadable (it only enriches citations)."""
    starts: list[tuple[int, tuple[str, ...]]] = []

    def walk(items, parents: tuple[str, ...]) -> None:
        previous_path = parents
        for item in items:
            if isinstance(item, list):
                walk(item, previous_path)
                continue
            title = (getattr(item, "title", None) or "").strip()
            if not title:
                continue
            previous_path = parents + (title,)
            page_index = reader.get_destination_page_number(item)
            if page_index is not None and page_index >= 0:
                starts.append((page_index, previous_path))

    try:
        walk(reader.outline, ())
    except Exception:  # A broken outline must not fail an otherwise readable document.
        return []
    return sorted(starts, key=lambda start: start[0])


def extract_pdf(data: bytes, filename: str = "file") -> Document:
    reader = open_pdf(data, filename)
    builder = _DocumentBuilder(FileKind.PDF)
    outline = _pdf_outline_starts(reader)
    heading_path: tuple[str, ...] = ()
    outline_index = 0
    page_count = len(reader.pages)
    for page_index in range(page_count):
        while outline_index < len(outline) and outline[outline_index][0] <= page_index:
            heading_path = outline[outline_index][1]
            outline_index += 1
        try:
            page_text = reader.pages[page_index].extract_text() or ""
        except Exception as error:  # See open_pdf: parser failures come in every type.
            raise CorruptFile(
                f"“{filename}” is a damaged PDF: page {page_index + 1} cannot be read ({error})."
            ) from error
        for paragraph in _pdf_paragraphs(page_text.replace("\r\n", "\n").replace("\r", "\n")):
            builder.add(paragraph, BlockKind.PARAGRAPH, heading_path=heading_path, page=page_index + 1)
    try:
        title = reader.metadata.title if reader.metadata else None
    except Exception:  # Unreadable metadata only costs the title.
        title = None
    return builder.build(title=title if isinstance(title, str) else None, page_count=page_count)


# CSV ------------------------------------------------------------------------------------------


def _csv_dialect(sample: str):
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t|")
    except csv.Error:
        return csv.excel


def _looks_like_header(row: list[str]) -> bool:
    """Column names are present, distinct and not numbers (csv.Sniffer.has_header guesses wrong
    whenever every column holds text)."""
    names = [cell.strip() for cell in row]
    if not all(names) or len(set(names)) != len(names):
        return False
    return not any(re.fullmatch(r"[-+]?[\d.,]+%?", name) for name in names)


def _one_line(value: str) -> str:
    return _WHITESPACE.sub(" ", value).strip()


def extract_csv(text: str, filename: str = "file") -> Document:
    builder = _DocumentBuilder(FileKind.CSV)
    sample = text[: 16 * 1024]
    reader = csv.reader(io.StringIO(text), _csv_dialect(sample))
    try:
        rows = []
        first_line = 1
        for row in reader:
            rows.append((first_line, row))
            first_line = reader.line_num + 1
    except csv.Error as error:
        raise CorruptFile(f"“{filename}” is not a readable CSV file: {error} (line {reader.line_num}).") from error
    rows = [(line, row) for line, row in rows if any(cell.strip() for cell in row)]
    if not rows:
        return builder.build()
    if len(rows) > 1 and _looks_like_header(rows[0][1]):
        header = [_one_line(name) for name in rows[0][1]]
        builder.add("Columns: " + ", ".join(header), BlockKind.HEADING, line=rows[0][0])
        data_rows = rows[1:]
    else:
        header = []
        data_rows = rows
    for line, row in data_rows:
        fields = []
        for position, value in enumerate(row):
            value = _one_line(value)
            if not value:
                continue
            name = header[position] if position < len(header) and header[position] else (f"column {position + 1}")
            fields.append(f"{name}: {value}")
        builder.add("; ".join(fields), BlockKind.RECORD, line=line)
    return builder.build()


# JSON -----------------------------------------------------------------------------------------


def _json_lines(value, path: str) -> list[str]:
    if isinstance(value, dict):
        if not value:
            return [f"{path}: {{}}"] if path else []
        lines = []
        for key, item in value.items():
            lines.extend(_json_lines(item, f"{path}.{key}" if path else str(key)))
        return lines
    if isinstance(value, list):
        if not value:
            return [f"{path}: []"] if path else []
        if all(not isinstance(item, (dict, list)) for item in value):
            return [f"{path}: " + ", ".join(_json_scalar(item) for item in value)]
        lines = []
        for index, item in enumerate(value):
            lines.extend(_json_lines(item, f"{path}[{index}]"))
        return lines
    return [f"{path}: {_json_scalar(value)}" if path else _json_scalar(value)]


def _json_scalar(value) -> str:
    return _one_line(value) if isinstance(value, str) else json.dumps(value)


def extract_json(text: str, filename: str = "file") -> Document:
    """One record block per top-level member (object key or array item), one `path: value` line
    per leaf, so every line says where in the structure it came from."""
    builder = _DocumentBuilder(FileKind.JSON)
    data = parse_json(text, filename)
    if isinstance(data, dict):
        members = [({key: value}, "") for key, value in data.items()]
    elif isinstance(data, list):
        members = [(item, f"[{index}]") for index, item in enumerate(data)]
    else:
        members = [(data, "")]
    try:
        for value, path in members:
            builder.add("\n".join(_json_lines(value, path)), BlockKind.RECORD)
    except RecursionError as error:
        raise CorruptFile(f"“{filename}” nests JSON too deeply to be read.") from error
    return builder.build()
