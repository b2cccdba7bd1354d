import logging
import re
import uuid

from django.http import HttpResponseBadRequest

from liminal.api import ERROR_CODES, error_response, exception_response

logger = logging.getLogger(__name__)

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestIdMiddleware:
    """Gives every request an id (the caller's X-Request-ID when sane) echoed in the response."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        incoming = request.headers.get("X-Request-ID", "")
        request.request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        response = self.get_response(request)
        response["X-Request-ID"] = request.request_id
        return response


class ApiErrorEnvelopeMiddleware:
    """Errors raised outside DRF views under /v1/ (unknown URL, CSRF, crashes) still get the envelope."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if not request.path.startswith("/v1/") or response.status_code < 400:
            return response
        if response.get("Content-Type", "").startswith(("application/json", "text/event-stream")):
            return response
        code = ERROR_CODES.get(response.status_code, "error")
        message = {
            404: "Not found.",
            403: "Forbidden.",
            405: "Method not allowed.",
            413: "Request body too large.",
            500: "Internal server error.",
        }.get(response.status_code, "Request failed.")
        return error_response(response.status_code, code, message, request=request)

    def process_exception(self, request, exception):
        if not request.path.startswith("/v1/"):
            return None
        # The one mapping: an outage escaping a view is a 503, a domain error its own status,
        # anything else a logged 500.
        return exception_response(exception, request)


class RejectNulMiddleware:
    """A NUL byte in the query string or a header is never meaningful, and PostgreSQL refuses it
    in text: answer 400 (in the envelope under /v1/) before any view builds a query with it."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        field = self._nul_field(request)
        if field is None:
            return self.get_response(request)
        message = f"{field}: must not contain NUL characters."
        if request.path.startswith("/v1/"):
            return error_response(400, "validation_error", message, {field: [message]}, request=request)
        return HttpResponseBadRequest(message, content_type="text/plain; charset=utf-8")

    @staticmethod
    def _nul_field(request) -> str | None:
        for key, values in request.GET.lists():
            if "\x00" in key or any("\x00" in value for value in values):
                return key.replace("\x00", "") or "query"
        for name, value in request.headers.items():
            if "\x00" in value:
                return name
        if "\x00" in request.path:
            return "path"
        return None
