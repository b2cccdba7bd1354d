"""Bearer tokens for the API.

Access tokens are short-lived signed values naming an AuthSession; every use checks that the
session is still live, so logout revokes them at once. Refresh tokens are random secrets stored
only as a SHA-256 hash and replaced on every refresh.
"""

import hashlib
import secrets

from django.conf import settings
from django.core import signing

ACCESS_PREFIX = "lat_"
REFRESH_PREFIX = "lrt_"
_ACCESS_SALT = "liminal.accounts.access-token"


class InvalidToken(Exception):
    pass


def access_token_issue(*, session_id, user_id) -> str:
    payload = {"sid": str(session_id), "uid": str(user_id)}
    return ACCESS_PREFIX + signing.dumps(payload, salt=_ACCESS_SALT, compress=True)


def access_token_read(token: str) -> dict:
    if not token.startswith(ACCESS_PREFIX):
        raise InvalidToken("Malformed access token.")
    try:
        return signing.loads(token[len(ACCESS_PREFIX) :], salt=_ACCESS_SALT, max_age=settings.ACCESS_TOKEN_TTL_SECONDS)
    except signing.SignatureExpired as exc:
        raise InvalidToken("Access token expired.") from exc
    except signing.BadSignature as exc:
        raise InvalidToken("Invalid access token.") from exc


def refresh_token_new() -> str:
    return REFRESH_PREFIX + secrets.token_urlsafe(32)


API_KEY_PREFIX = "lk_"


def api_key_new() -> tuple[str, str]:
    """(public prefix, full key). The prefix identifies the row; the rest is the secret."""
    prefix = secrets.token_hex(6)
    return prefix, f"{API_KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"


def api_key_prefix(key: str) -> str | None:
    if not key.startswith(API_KEY_PREFIX):
        return None
    prefix, sep, _ = key[len(API_KEY_PREFIX) :].partition("_")
    return prefix if sep and prefix else None


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


_EMAIL_SALT = "liminal.accounts.email-link"


def email_link_token_issue(*, user_id, email: str, purpose: str, current_email: str = "") -> str:
    """A signed, timestamped link token proving that whoever presents it read mail sent to `email`.
    purpose "verify": confirms the account's address; "change": moves the account from
    `current_email` to `email`. Each is only good while the account is in the state it was issued
    for (address still unverified, or still `current_email`), so it works once."""
    payload = {"uid": str(user_id), "email": email, "purpose": purpose, "from": current_email}
    return signing.dumps(payload, salt=_EMAIL_SALT, compress=True)


def email_link_token_read(token: str) -> dict:
    try:
        return signing.loads(token, salt=_EMAIL_SALT, max_age=settings.EMAIL_VERIFICATION_TIMEOUT)
    except signing.SignatureExpired as exc:
        raise InvalidToken("This link has expired.") from exc
    except signing.BadSignature as exc:
        raise InvalidToken("This link is invalid.") from exc


def password_reset_token_issue(user) -> str:
    """Django's reset token (bound to the password hash, last login and email, so a completed
    reset spends it; expires after PASSWORD_RESET_TIMEOUT) with the user id in front."""
    from django.contrib.auth.tokens import default_token_generator
    from django.utils.encoding import force_bytes
    from django.utils.http import urlsafe_base64_encode

    return f"{urlsafe_base64_encode(force_bytes(user.pk))}.{default_token_generator.make_token(user)}"


def password_reset_token_split(token: str) -> tuple[str, str]:
    """(user id, Django token); raises InvalidToken when malformed."""
    from django.utils.http import urlsafe_base64_decode

    encoded_uid, sep, django_token = (token or "").partition(".")
    if not sep or not django_token:
        raise InvalidToken("This reset link is invalid.")
    try:
        return urlsafe_base64_decode(encoded_uid).decode(), django_token
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidToken("This reset link is invalid.") from exc
