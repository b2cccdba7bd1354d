"""Decide what an uploaded file is from its name *and* its bytes, against an allow-list."""

from __future__ import annotations

import io
import json
import re
from enum import StrEnum
from pathlib import PurePath

from pypdf import PdfReader

from workers.ingest.errors import CorruptFile, UnsupportedFileType


class FileKind(StrEnum):
    TEXT = "text"
    MARKDOWN = "markdown"
    HTML = "html"
    PDF = "pdf"
    CSV = "csv"
    JSON = "json"


EXTENSION_KINDS: dict[str, FileKind] = {
    "txt": FileKind.TEXT,
    "md": FileKind.MARKDOWN,
    "markdown": FileKind.MARKDOWN,
    "html": FileKind.HTML,
    "htm": FileKind.HTML,
    "pdf": FileKind.PDF,
    "csv": FileKind.CSV,
    "json": FileKind.JSON,
}
ALLOWED_EXTENSIONS: tuple[str, ...] = tuple(sorted(EXTENSION_KINDS))

PDF_MAGIC = b"%PDF-"
# How far into the file a PDF header may start (readers tolerate leading junk up to 1 KiB).
PDF_HEADER_WINDOW = 1024

# Signatures of common binary formats, only to name what a rejected file looks like.
_BINARY_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"RIFF", "a RIFF media file (WebP, WAV or AVI)"),
    (b"PK\x03\x04", "a ZIP archive (or a DOCX/XLSX/PPTX document)"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "a legacy Microsoft Office document"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"Rar!\x1a\x07", "a RAR archive"),
    (b"\x7fELF", "an executable program"),
    (b"MZ", "a Windows executable"),
    (b"ID3", "an MP3 audio file"),
    (b"OggS", "an Ogg media file"),
    (b"SQLite format 3\x00", "an SQLite database"),
)

# Share of control characters above which decoded "text" is really binary data.
_MAX_CONTROL_CHARACTER_SHARE = 0.01
# Unicode control characters (category Cc) other than tab, newlines, vertical tab and form feed.
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x9f]")


def _allowed_types_phrase() -> str:
    return ", ".join(f".{extension}" for extension in ALLOWED_EXTENSIONS)


def kind_from_filename(filename: str) -> FileKind:
    """The kind an extension claims; raises UnsupportedFileType for anything off the allow-list."""
    suffix = PurePath(filename).suffix.lower().lstrip(".")
    if not suffix:
        raise UnsupportedFileType(f"“{filename}” has no file extension. Allowed types: {_allowed_types_phrase()}.")
    kind = EXTENSION_KINDS.get(suffix)
    if kind is None:
        raise UnsupportedFileType(
            f"“{filename}”: .{suffix} files are not supported. Allowed types: {_allowed_types_phrase()}."
        )
    return kind


def describe_binary(data: bytes) -> str | None:
    """A human name for a known binary format ("a PNG image"), or None."""
    if data.lstrip()[:5] == PDF_MAGIC:
        return "a PDF document"
    for signature, description in _BINARY_SIGNATURES:
        if data.startswith(signature):
            return description
    return None


def decode_text(data: bytes, filename: str = "file") -> str:
    """Decode bytes that should be text: UTF-8 (with or without BOM), UTF-16/32 with a BOM, or
    Windows-1252 as a last resort for legacy files. Newlines are normalised to "\\n".

    Raises UnsupportedFileType when the bytes are binary data rather than text.
    """
    text = _decode(data)
    if text is None or _looks_binary(text):
        what = describe_binary(data) or "binary data"
        raise UnsupportedFileType(
            f"“{filename}” is {what}, not text, so it cannot be read as {PurePath(filename).suffix or 'text'}."
        )
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _decode(data: bytes) -> str | None:
    boms = (
        (b"\xef\xbb\xbf", "utf-8-sig"),
        (b"\xff\xfe\x00\x00", "utf-32"),
        (b"\x00\x00\xfe\xff", "utf-32"),
        (b"\xff\xfe", "utf-16"),
        (b"\xfe\xff", "utf-16"),
    )
    for bom, encoding in boms:
        if data.startswith(bom):
            try:
                return data.decode(encoding)
            except UnicodeDecodeError:
                return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    if b"\x00" in data:
        return None
    try:
        return data.decode("cp1252")
    except UnicodeDecodeError:
        return None


def _looks_binary(text: str) -> bool:
    if "\x00" in text:
        return True
    if not text:
        return False
    control = len(_CONTROL_CHARACTERS.findall(text))
    return control / len(text) > _MAX_CONTROL_CHARACTER_SHARE


def detect_file_type(filename: str, data: bytes) -> FileKind:
    """Check that `data` really is what `filename`'s extension says, and return its kind.

    Cheap enough to run on upload: PDFs are opened (not fully extracted), JSON is parsed, text
    types are decoded. Raises UnsupportedFileType (not an allowed type, or content of another
    type) or CorruptFile (the right type, but unreadable).
    """
    kind = kind_from_filename(filename)
    if kind is FileKind.PDF:
        _check_pdf(filename, data)
        return kind
    if describe_binary(data) == "a PDF document":
        raise UnsupportedFileType(f"“{filename}” is a PDF document; upload it with a .pdf extension.")
    text = decode_text(data, filename)
    if kind is FileKind.JSON:
        parse_json(text, filename)
    return kind


def parse_json(text: str, filename: str = "file"):
    if not text.strip():
        raise CorruptFile(f"“{filename}” is empty, so it is not valid JSON.")
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise CorruptFile(
            f"“{filename}” is not valid JSON: {error.msg} at line {error.lineno}, column {error.colno}."
        ) from error
    except RecursionError as error:
        raise CorruptFile(f"“{filename}” nests JSON too deeply to be read.") from error


def _check_pdf(filename: str, data: bytes) -> None:
    if PDF_MAGIC not in data[:PDF_HEADER_WINDOW]:
        what = describe_binary(data)
        if what is not None:
            raise UnsupportedFileType(f"“{filename}” is {what}, not a PDF.")
        raise CorruptFile(f"“{filename}” is not a valid PDF: it has no %PDF- header.")
    open_pdf(data, filename)


def open_pdf(data: bytes, filename: str = "file"):
    """A pypdf reader with at least one page, decrypted if it only has an empty password.

    Raises CorruptFile for anything pypdf cannot parse, UnsupportedFileType when a password is
    needed.
    """
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise UnsupportedFileType(f"“{filename}” is password-protected; upload an unprotected copy.")
        page_count = len(reader.pages)
    except UnsupportedFileType:
        raise
    # A damaged file can surface from deep inside the parser as almost any exception type
    # (zlib, struct, KeyError, RecursionError...); all of them mean the same thing here.
    except Exception as error:
        raise CorruptFile(f"“{filename}” is a damaged PDF and cannot be read ({error}).") from error
    if page_count == 0:
        raise CorruptFile(f"“{filename}” is a PDF with no pages.")
    return reader
