import hmac

from django.core.exceptions import ValidationError
from django.utils import timezone
from django_otp.plugins.otp_static.models import StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from apps.accounts.models import ApiKey, AuthSession, User
from apps.accounts.tokens import api_key_prefix, secret_hash


def user_profile(*, actor: User) -> User:
    return User.objects.select_related("tenant").get(pk=actor.pk)


def auth_session_list(*, actor: User):
    return AuthSession.objects.filter(user=actor, revoked_at__isnull=True).order_by("-created_at")


def auth_session_get(*, actor: User, session_id) -> AuthSession | None:
    """The actor's own session, or None: another user's session id is indistinguishable from a bad one."""
    return AuthSession.objects.filter(user=actor, pk=session_id).first()


def auth_session_live(*, session_id, user_id) -> AuthSession | None:
    session = (
        AuthSession.objects.select_related("user", "user__tenant")
        .filter(pk=session_id, user_id=user_id, revoked_at__isnull=True)
        .first()
    )
    if session is None or not session.is_active or not session.user.is_active:
        return None
    return session


def api_key_list(*, actor: User):
    return ApiKey.objects.filter(user=actor, revoked_at__isnull=True).order_by("-created_at")


def api_key_get(*, actor: User, key_id) -> ApiKey | None:
    return ApiKey.objects.filter(user=actor, pk=key_id, revoked_at__isnull=True).first()


def api_key_user(*, key: str) -> User | None:
    """The active user an API key belongs to, or None for an unknown, revoked or mistyped key."""
    prefix = api_key_prefix(key)
    if prefix is None:
        return None
    api_key = ApiKey.objects.select_related("user").filter(prefix=prefix, revoked_at__isnull=True).first()
    if api_key is None or not hmac.compare_digest(api_key.key_hash, secret_hash(key)):
        return None
    if not api_key.user.is_active:
        return None
    ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=timezone.now())
    return api_key.user


def mfa_status(*, actor: User) -> dict:
    """`enabled`: codes are required at login; `configured`: an authenticator secret exists (a
    confirmed one, or an enrolment started and not yet confirmed)."""
    devices = list(TOTPDevice.objects.filter(user=actor).values_list("confirmed", flat=True))
    return {
        "enabled": any(devices),
        "configured": bool(devices),
        "recovery_codes_left": StaticToken.objects.filter(device__user=actor).count(),
    }


def auth_session_owned(*, actor: User, session_id) -> AuthSession | None:
    """One of the actor's own live sessions, or None (another user's id looks like an unknown one)."""
    try:
        session = AuthSession.objects.filter(pk=session_id, user=actor, revoked_at__isnull=True).first()
    except (ValueError, ValidationError):
        return None
    return session if session is not None and session.is_active else None


def mfa_enrolment_pending(*, actor: User) -> TOTPDevice | None:
    """The actor's unconfirmed authenticator secret, if an enrolment is under way."""
    return TOTPDevice.objects.filter(user=actor, confirmed=False).first()
