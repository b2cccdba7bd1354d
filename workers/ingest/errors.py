"""Errors raised while sniffing and extracting uploaded files.

Messages are written for the person who uploaded the file; `code` is a stable machine name.
"""


class IngestError(Exception):
    code = "ingest_error"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class UnsupportedFileType(IngestError):
    """The file's name or content is not one of the allowed types."""

    code = "unsupported_file_type"


class CorruptFile(IngestError):
    """The file claims an allowed type but cannot be read as one."""

    code = "corrupt_file"


class TooMuchText(IngestError):
    """The file extracts to more text, or more chunks, than one file may hold."""

    code = "too_much_text"


class ExtractionTimedOut(IngestError):
    """Extraction ran past its time limit (a decompression bomb, a pathological file)."""

    code = "extraction_timeout"
