import logging
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.password_validation import validate_password
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.accounts.models import ApiKey, AuthSession, RotatedRefreshToken, Tenant, User
from apps.accounts.tokens import access_token_issue, api_key_new, refresh_token_new, secret_hash
from liminal.api import Conflict

logger = logging.getLogger(__name__)


def _normalise_email(email: str) -> str:
    email = (email or "").strip()
    local, _, domain = email.rpartition("@")
    return f"{local}@{domain.lower()}" if local else email


@transaction.atomic
def user_create(
    *,
    email: str,
    password: str | None,
    handle: str = "",
    role: str = User.Role.USER,
    plan_tier: str = User.Plan.FREE,
    tenant: Tenant | None = None,
) -> User:
    email = _normalise_email(email)
    handle = (handle or "").strip()
    if User.objects.filter(email__iexact=email).exists():
        raise Conflict("An account with this email already exists.")
    if handle and User.objects.filter(handle__iexact=handle).exists():
        raise Conflict("This handle is taken.")
    user = User(email=email, handle=handle, role=role, plan_tier=plan_tier)
    if password is None:
        user.set_unusable_password()
    else:
        validate_password(password, user=user)
        user.set_password(password)
    user.tenant = tenant or Tenant.objects.create(name=f"{handle or email}'s workspace")
    user.full_clean(exclude=["password", "tenant"])
    try:
        with transaction.atomic():
            user.save()
    except IntegrityError as exc:  # a concurrent signup won the race for the email or handle
        raise Conflict("An account with this email or handle already exists.") from exc
    return user


@transaction.atomic
def admin_bootstrap(*, email: str, password: str) -> tuple[User, bool]:
    """Create the admin, or make the existing account an admin with this password."""
    user = User.objects.select_for_update().filter(email__iexact=_normalise_email(email)).first()
    if user is None:
        return user_create(email=email, password=password, role=User.Role.ADMIN), True
    validate_password(password, user=user)
    user.set_password(password)
    user.role = User.Role.ADMIN
    user.is_active = True
    user.save()
    return user, False


def _session_tokens(session: AuthSession, refresh_token: str) -> dict:
    user = session.user
    return {
        "user_id": str(user.id),
        "session_id": str(session.id),
        "access_token": access_token_issue(session_id=session.id, user_id=user.id),
        "refresh_token": refresh_token,
        "token_type": "bearer",
        "expires_in": settings.ACCESS_TOKEN_TTL_SECONDS,
        "role": user.role,
        "tenant_id": str(user.tenant_id),
        "mfa_required": False,
    }


@transaction.atomic
def auth_session_start(*, user: User, user_agent: str = "", ip_address: str | None = None) -> dict:
    refresh_token = refresh_token_new()
    session = AuthSession.objects.create(
        user=user,
        refresh_token_hash=secret_hash(refresh_token),
        expires_at=timezone.now() + timedelta(seconds=settings.REFRESH_TOKEN_TTL_SECONDS),
        user_agent=user_agent[:300],
        ip_address=ip_address,
    )
    return _session_tokens(session, refresh_token)


class InvalidRefreshToken(Exception):
    pass


def auth_session_refresh(*, refresh_token: str) -> dict:
    """Rotate: issue a new refresh token and make the presented one worthless. A rotated token
    presented again revokes its session: someone holds a copy (see RotatedRefreshToken)."""
    presented = secret_hash(refresh_token or "")
    with transaction.atomic():
        session = (
            AuthSession.objects.select_for_update().select_related("user").filter(refresh_token_hash=presented).first()
        )
        if session is not None and session.is_active and session.user.is_active:
            RotatedRefreshToken.objects.create(token_hash=session.refresh_token_hash, session=session)
            new_refresh = refresh_token_new()
            session.refresh_token_hash = secret_hash(new_refresh)
            session.last_refreshed_at = timezone.now()
            session.save(update_fields=["refresh_token_hash", "last_refreshed_at"])
            return _session_tokens(session, new_refresh)
    reused = RotatedRefreshToken.objects.filter(token_hash=presented).select_related("session").first()
    if reused is not None:
        logger.warning("A rotated refresh token was presented again; revoking session %s", reused.session_id)
        auth_session_revoke(session=reused.session)
    raise InvalidRefreshToken("Refresh token is invalid, expired or revoked.")


def auth_session_revoke(*, session: AuthSession) -> None:
    AuthSession.objects.filter(pk=session.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())


def auth_sessions_purge_expired() -> int:
    """Delete sessions that can no longer be used (expired, or revoked over a day ago)."""
    now = timezone.now()
    expired = AuthSession.objects.filter(expires_at__lt=now)
    revoked = AuthSession.objects.filter(revoked_at__lt=now - timedelta(days=1))
    deleted, _ = (expired | revoked).delete()
    return deleted


def credentials_check(*, email: str, password: str) -> User | None:
    user = User.objects.filter(email__iexact=_normalise_email(email)).first()
    if user is None:
        # Spend the same hashing time as a real check, so timing does not reveal which emails exist.
        User().set_password(password or "")
        return None
    if not user.is_active or not user.check_password(password or ""):
        return None
    return user


def api_key_create(*, actor: User, name: str) -> tuple[ApiKey, str]:
    """Returns the row and the full key, which is never retrievable again."""
    name = (name or "").strip()[:100] or "API key"
    prefix, key = api_key_new()
    api_key = ApiKey.objects.create(user=actor, name=name, prefix=prefix, key_hash=secret_hash(key))
    return api_key, key


def api_key_revoke(*, actor: User, api_key: ApiKey) -> None:
    assert api_key.user_id == actor.id
    ApiKey.objects.filter(pk=api_key.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
