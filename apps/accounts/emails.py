"""The account emails (verification, address change, password reset), rendered from
templates/accounts/email/ and sent through Django's configured EMAIL_BACKEND.

A failed delivery is logged, never raised: whether a message went out must not change the answer
(that would tell a caller which addresses have accounts)."""

import logging
from urllib.parse import urlencode

from django.conf import settings
from django.core.mail import send_mail
from django.template.loader import render_to_string
from django.urls import reverse

logger = logging.getLogger(__name__)


def link(base_url: str, view_name: str, token: str) -> str:
    return f"{base_url}{reverse(view_name)}?{urlencode({'token': token})}"


def email_send(*, to: str, template: str, context: dict) -> None:
    context = {"site_name": settings.OTP_TOTP_ISSUER, **context}
    subject = render_to_string(f"accounts/email/{template}_subject.txt", context).strip()
    body = render_to_string(f"accounts/email/{template}.txt", context)
    try:
        send_mail(subject, body, None, [to])
    except Exception:
        logger.exception("Could not send the %s email", template)


def base_url_of(request) -> str:
    """Where links in emails point: PUBLIC_BASE_URL, else the host this request came to (one of
    ALLOWED_HOSTS, which Django has already checked)."""
    return settings.PUBLIC_BASE_URL or request.build_absolute_uri("/").rstrip("/")
