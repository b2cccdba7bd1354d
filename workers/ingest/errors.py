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
