"""Receiving uploads: refuse oversize bodies early, and keep the file name the client sent.

Django reduces an uploaded file's name to its last path component ("../../x.txt" → "x.txt"),
which is safe but silent. The API parser records the name as sent, so the service can refuse a
traversal attempt with a clear error instead of storing the file under a name nobody chose.
"""

import html

from django.conf import settings
from django.core.files.uploadhandler import FileUploadHandler
from django.http.multipartparser import MultiPartParser as DjangoMultiPartParser
from django.http.multipartparser import MultiPartParserError
from rest_framework.exceptions import ParseError
from rest_framework.parsers import DataAndFiles, MultiPartParser

from apps.knowledge.services import UploadTooLarge
from liminal.asgi_body import MULTIPART_OVERHEAD_BYTES


def check_declared_size(meta) -> None:
    """413 before reading a body whose declared length cannot fit under the limit."""
    try:
        declared = int(meta.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > settings.MAX_UPLOAD_BYTES + MULTIPART_OVERHEAD_BYTES:
        raise UploadTooLarge(declared)


class UploadSizeLimitHandler(FileUploadHandler):
    """Stops reading a file part as soon as it passes MAX_UPLOAD_BYTES, whatever was declared."""

    def receive_data_chunk(self, raw_data, start):
        if start + len(raw_data) > settings.MAX_UPLOAD_BYTES:
            raise UploadTooLarge(start + len(raw_data))
        return raw_data

    def file_complete(self, file_size):
        return None


def install_upload_limits(request) -> None:
    """Call before the body is parsed (before request.data / request.FILES)."""
    check_declared_size(request.META)
    request.upload_handlers.insert(0, UploadSizeLimitHandler(request))


class _NameKeepingParser(DjangoMultiPartParser):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.sent_file_names: list[str] = []

    def sanitize_file_name(self, file_name):
        self.sent_file_names.append(html.unescape(file_name))
        return super().sanitize_file_name(file_name)


class UploadParser(MultiPartParser):
    """DRF's multipart parser, plus `sent_name` on each uploaded file: the name as the client sent it."""

    def parse(self, stream, media_type=None, parser_context=None):
        parser_context = parser_context or {}
        request = parser_context["request"]
        meta = request.META.copy()
        meta["CONTENT_TYPE"] = media_type
        encoding = parser_context.get("encoding", settings.DEFAULT_CHARSET)
        try:
            parser = _NameKeepingParser(meta, stream, request.upload_handlers, encoding)
            data, files = parser.parse()
        except MultiPartParserError as exc:
            raise ParseError(f"Multipart form parse error - {exc}") from exc
        # Names Django dropped entirely (".." and the like) leave no file behind; the view still
        # needs to know one was sent.
        request.sent_file_names = parser.sent_file_names
        uploaded = [file for _, values in files.lists() for file in values]
        if len(uploaded) == len(parser.sent_file_names):
            for file, sent_name in zip(uploaded, parser.sent_file_names, strict=True):
                file.sent_name = sent_name
        return DataAndFiles(data, files)
