"""The /v1 JSON envelope shared by every API response, success or error.

{"status": "ok", "data": ..., "request_id": ...}
{"status": "error", "error": {"code", "message", "details"}, "request_id": ...}
"""

import logging

import kombu.exceptions
import redis.exceptions
from django.core.exceptions import PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import InterfaceError, OperationalError
from django.http import Http404, JsonResponse
from rest_framework import exceptions, status
from rest_framework.renderers import JSONRenderer

from liminal.errors import Conflict, DomainError, RateLimited, Unavailable  # noqa: F401  (re-exported)

logger = logging.getLogger(__name__)

ERROR_CODES = {
    400: "validation_error",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    500: "server_error",
    503: "unavailable",
}


# The domain errors live in liminal.errors; ApiError is their historical name in this module.
ApiError = DomainError


def request_id_of(request) -> str | None:
    return getattr(request, "request_id", None) or getattr(getattr(request, "_request", None), "request_id", None)


def error_body(code: str, message: str, details=None, request_id=None) -> dict:
    return {
        "status": "error",
        "error": {"code": code, "message": message, "details": details},
        "request_id": request_id,
    }


def error_response(status_code: int, code: str, message: str, details=None, request=None) -> JsonResponse:
    return JsonResponse(error_body(code, message, details, request_id_of(request)), status=status_code)


def _first_message(details) -> str:
    if isinstance(details, dict):
        for field, value in details.items():
            message = _first_message(value)
            return message if field == "non_field_errors" else f"{field}: {message}"
    if isinstance(details, list) and details:
        return _first_message(details[0])
    return str(details)


def error_code_of(exc, status_code: int | None = None) -> str:
    """The envelope code for an exception: its own code, else the one for its HTTP status."""
    if isinstance(exc, Http404):
        return "not_found"
    status_code = status_code or getattr(exc, "status_code", 500)
    return getattr(exc, "error_code", None) or ERROR_CODES.get(status_code, "error")


def _message_and_details(exc: exceptions.APIException):
    if isinstance(exc, exceptions.ValidationError):
        return _first_message(exc.detail), exc.detail
    return str(exc.detail), getattr(exc, "details", None)


def _add_error_headers(exc, response) -> None:
    """401 with a challenge for missing or bad credentials (DRF would say 403 without an
    authenticator challenge), and Retry-After for rate limits and outages."""
    if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
        response.status_code = status.HTTP_401_UNAUTHORIZED
        response["WWW-Authenticate"] = 'Bearer realm="liminal"'
    if isinstance(exc, exceptions.Throttled | RateLimited | Unavailable):
        retry_after = getattr(exc, "retry_after", None) or getattr(exc, "wait", None) or 1
        response["Retry-After"] = str(int(retry_after))


# A dependency that is down or unreachable, not a bug: PostgreSQL (Django wraps the driver's
# errors in these), Redis (cache, state, channel layer) and the Celery broker.
OUTAGES = (
    OperationalError,
    InterfaceError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    kombu.exceptions.OperationalError,
)


def _as_drf(exc):
    """Django's and Python's exceptions that input or an outage can cause, as DRF's or the
    domain's, for both mappings below."""
    if isinstance(exc, OUTAGES):
        logger.warning("A dependency is unavailable: %s: %s", exc.__class__.__name__, exc)
        return Unavailable("The service is briefly unavailable; try again shortly.")
    if isinstance(exc, PermissionDenied):
        return exceptions.PermissionDenied()
    if isinstance(exc, DjangoValidationError):
        return exceptions.ValidationError(exc.message_dict if hasattr(exc, "error_dict") else exc.messages)
    if isinstance(exc, RecursionError):  # JSON nested thousands of levels deep
        return exceptions.ParseError("The request is nested too deeply.")
    return exc


def envelope_exception_handler(exc, context):
    # Imported here: rest_framework.views reads the renderer setting, which names this module.
    from rest_framework.views import exception_handler as drf_exception_handler

    exc = exceptions.NotFound() if isinstance(exc, Http404) and not isinstance(exc, DomainError) else _as_drf(exc)

    response = drf_exception_handler(exc, context)
    request = context.get("request")
    if response is None:
        logger.exception("Unhandled API error", exc_info=exc)
        return error_response(500, "server_error", "Internal server error.", request=request)
    _add_error_headers(exc, response)
    message, details = _message_and_details(exc)
    response.data = error_body(error_code_of(exc, response.status_code), message, details, request_id_of(request))
    return response


class EnvelopeJSONRenderer(JSONRenderer):
    """Wraps successful payloads in the envelope; error payloads arrive already wrapped."""

    def render(self, data, accepted_media_type=None, renderer_context=None):
        renderer_context = renderer_context or {}
        response = renderer_context.get("response")
        request = renderer_context.get("request")
        already_wrapped = isinstance(data, dict) and data.get("status") in {"ok", "error"} and "request_id" in data
        if response is not None and response.status_code == 204:
            return b""
        if not already_wrapped:
            data = {"status": "ok", "data": data, "request_id": request_id_of(request)}
        return super().render(data, accepted_media_type, renderer_context)


def error_parts(exc) -> tuple[int, str, str, object]:
    """(HTTP status, envelope code, message, details) for any exception: the one mapping that
    async views, WebSocket consumers and tasks share with DRF's handler above."""
    if isinstance(exc, Http404) and not isinstance(exc, DomainError):
        return 404, "not_found", str(exc) or "Not found.", None
    exc = _as_drf(exc)
    if not isinstance(exc, exceptions.APIException):
        logger.exception("Unhandled API error", exc_info=exc)
        return 500, "server_error", "Internal server error.", None
    message, details = _message_and_details(exc)
    return exc.status_code, error_code_of(exc), message, details


def exception_response(exc, request) -> JsonResponse:
    """The envelope for an exception raised outside a DRF view (async views, consumers)."""
    exc = _as_drf(exc)
    status_code, code, message, details = error_parts(exc)
    response = error_response(status_code, code, message, details, request=request)
    _add_error_headers(exc, response)
    return response


def validated(serializer_class, request) -> dict:
    """Validated input of a DRF request, or a 400 validation_error in the envelope."""
    serializer = serializer_class(data=request.data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data
