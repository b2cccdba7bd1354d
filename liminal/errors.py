"""The one domain error type. Services raise these; `liminal.api` maps them to the envelope in
one place for DRF views, async views, WebSocket consumers and Celery tasks alike.

It derives from DRF's APIException only so DRF's own handler recognises it; nothing here needs
a request. NotFound is also an Http404, so server-rendered views answer with their 404 page.
"""

from django.http import Http404
from rest_framework import exceptions


class DomainError(exceptions.APIException):
    """An error with an HTTP status, an envelope code, a message and optional details."""

    def __init__(self, status_code: int, code: str, message: str, details=None):
        self.status_code = status_code
        self.error_code = code
        self.details = details
        super().__init__(detail=message, code=code)

    @property
    def message(self) -> str:
        return str(self.detail)


class NotFound(DomainError, Http404):
    """Missing, or owned by someone else: the two are indistinguishable to the caller."""

    def __init__(self, message: str = "Not found.", details=None):
        super().__init__(404, "not_found", message, details)


class Invalid(DomainError):
    """Bad input. `field` names the input at fault; `pointer` is a JSON pointer into a body."""

    def __init__(self, message: str, *, field: str | None = None, pointer: str | None = None, details=None):
        details = dict(details or {})
        if field:
            details.setdefault(field, [message])
        if pointer is not None:
            details["pointer"] = pointer
        super().__init__(400, "validation_error", f"{field}: {message}" if field else message, details or None)


class Forbidden(DomainError):
    def __init__(self, message: str = "You are not allowed to do this.", details=None):
        super().__init__(403, "forbidden", message, details)


class Conflict(DomainError):
    def __init__(self, message: str, details=None):
        super().__init__(409, "conflict", message, details)


class RateLimited(DomainError):
    def __init__(self, retry_after: int):
        self.retry_after = retry_after
        super().__init__(429, "rate_limited", "Too many requests; try again later.", {"retry_after": retry_after})


class Unavailable(DomainError):
    """Something the request needs (PostgreSQL, Redis, a worker) cannot serve it now; the
    response says when to try again (Retry-After)."""

    def __init__(self, message: str, details=None, *, retry_after: int = 5):
        self.retry_after = retry_after
        super().__init__(503, "unavailable", message, details)


def ensure_owner(obj, actor, what: str = "Not found.") -> None:
    """Ownership checks raise (never assert: asserts vanish under `python -O`)."""
    if obj is None or getattr(obj, "owner_id", None) != getattr(actor, "id", object()):
        raise NotFound(what)
