"""Text extraction and chunking for uploaded files; pure Python, no Django.

from workers.ingest import extract_document, chunk_document
document = extract_document("report.pdf", data)      # raises IngestError subclasses
chunks = chunk_document(document, encoder.count_tokens, max_tokens=encoder.max_text_tokens)
"""

from workers.ingest.chunk import (
    CHUNKING_VERSION,
    DEFAULT_OVERLAP_TOKENS,
    DEFAULT_TARGET_TOKENS,
    Chunk,
    chunk_document,
)
from workers.ingest.errors import CorruptFile, ExtractionTimedOut, IngestError, TooMuchText, UnsupportedFileType
from workers.ingest.extract import Block, BlockKind, Document, extract_document
from workers.ingest.sniff import ALLOWED_EXTENSIONS, FileKind, detect_file_type

__all__ = [
    "ALLOWED_EXTENSIONS",
    "CHUNKING_VERSION",
    "DEFAULT_OVERLAP_TOKENS",
    "DEFAULT_TARGET_TOKENS",
    "Block",
    "BlockKind",
    "Chunk",
    "CorruptFile",
    "ExtractionTimedOut",
    "TooMuchText",
    "Document",
    "FileKind",
    "IngestError",
    "UnsupportedFileType",
    "chunk_document",
    "detect_file_type",
    "extract_document",
]
