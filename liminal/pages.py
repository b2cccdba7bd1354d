"""Helpers for server-rendered pages shared by the apps."""

from django.contrib import messages

from liminal.errors import DomainError


def attempt(request, action, *, success: str | None = None) -> tuple[bool, object]:
    """Run a form post's service call: (True, its result), with `success` as the page's
    message, or (False, None) with the refusal's text (any DomainError: a conflict, a missing
    version, an outage) as the page's error, so the user stays where they were."""
    try:
        result = action()
    except DomainError as exc:
        messages.error(request, exc.message)
        return False, None
    if success:
        messages.success(request, success)
    return True, result
