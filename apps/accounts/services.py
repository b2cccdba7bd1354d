import logging
import re
from datetime import timedelta
from importlib import import_module

from django.conf import settings
from django.contrib.auth.password_validation import validate_password
from django.contrib.auth.tokens import default_token_generator
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from apps.accounts import emails
from apps.accounts.models import ApiKey, AuthSession, PendingLogin, RotatedRefreshToken, Tenant, User
from apps.accounts.ratelimit import state_redis
from apps.accounts.tokens import (
    InvalidToken,
    access_token_issue,
    api_key_new,
    email_link_token_issue,
    email_link_token_read,
    password_reset_token_issue,
    password_reset_token_split,
    refresh_token_new,
    secret_hash,
)
from liminal.api import Conflict, RateLimited
from liminal.errors import Invalid, NotFound

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
    created = user is None
    if created:
        user = user_create(email=email, password=password, role=User.Role.ADMIN)
    else:
        validate_password(password, user=user)
        user.set_password(password)
        user.role = User.Role.ADMIN
        user.is_active = True
    # The operator who runs the command vouches for the address (no login waits on verification).
    user.email_verified_at = user.email_verified_at or timezone.now()
    user.save()
    return user, created


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


def browser_session_start(*, user: User, session_key: str, user_agent: str = "", ip_address: str | None = None):
    """The AuthSession row of a browser login (see AuthSession): listed and revocable like an
    API session. `session_key` is the Django session's, deleted when the row is revoked."""
    return AuthSession.objects.create(
        user=user,
        kind=AuthSession.Kind.BROWSER,
        refresh_token_hash=secret_hash(refresh_token_new()),
        browser_session_key=session_key or "",
        expires_at=timezone.now() + timedelta(seconds=settings.SESSION_COOKIE_AGE),
        user_agent=user_agent[:300],
        ip_address=ip_address,
    )


def browser_session_rekey(*, session_id, session_key: str) -> None:
    """Django gave the browser login a new session key (e.g. after a password change)."""
    if session_id:
        AuthSession.objects.filter(pk=session_id, kind=AuthSession.Kind.BROWSER).update(
            browser_session_key=session_key or ""
        )


def _browser_sessions_end(session_keys) -> None:
    store = import_module(settings.SESSION_ENGINE).SessionStore
    for key in session_keys:
        if key:
            store(session_key=key).delete()


def auth_session_revoke(*, session: AuthSession) -> None:
    AuthSession.objects.filter(pk=session.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    _browser_sessions_end([session.browser_session_key])


def auth_sessions_revoke_all(*, user: User, keep_session_id=None) -> int:
    """Revoke every live session of the user but `keep_session_id` (the caller's own, if any):
    API tokens stop at once, browser logins are ended."""
    sessions = AuthSession.objects.filter(user=user, revoked_at__isnull=True)
    if keep_session_id is not None:
        sessions = sessions.exclude(pk=keep_session_id)
    keys = list(sessions.values_list("browser_session_key", flat=True))
    revoked = sessions.update(revoked_at=timezone.now())
    _browser_sessions_end(keys)
    return revoked


def auth_sessions_purge_expired() -> int:
    """Delete sessions that can no longer be used (expired, or revoked over a day ago)."""
    now = timezone.now()
    expired = AuthSession.objects.filter(expires_at__lt=now)
    revoked = AuthSession.objects.filter(revoked_at__lt=now - timedelta(days=1))
    deleted, _ = (expired | revoked).delete()
    PendingLogin.objects.filter(expires_at__lt=now).delete()
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


# ---------------------------------------------------------------- Sign-up and email verification


def _valid_for(seconds: int) -> str:
    for unit, size in (("day", 86400), ("hour", 3600)):
        if seconds >= size and seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'s' if count > 1 else ''}"
    minutes = max(1, -(-seconds // 60))
    return f"{minutes} minute{'s' if minutes > 1 else ''}"


def email_verification_send(*, user: User, base_url: str) -> None:
    token = email_link_token_issue(user_id=user.pk, email=user.email, purpose="verify")
    emails.email_send(
        to=user.email,
        template="verify_email",
        context={
            "email": user.email,
            "link": emails.link(base_url, "accounts:verify-email", token),
            "valid_for": _valid_for(settings.EMAIL_VERIFICATION_TIMEOUT),
        },
    )


def account_signup(*, email: str, password: str, handle: str = "", base_url: str) -> User | None:
    """Sign-up for the UI and the API alike.

    With EMAIL_VERIFICATION_REQUIRED off, the account is created (a verification link is still
    mailed) and returned for the caller to log in; a registered address raises Conflict, since an
    answer that logs a new user in cannot look the same for an address that is taken.
    With it on, nobody is logged in and the answer (None) is the same whether the address is new or
    registered: a new address gets a verification link, a registered one a note to its owner.
    Password rules and a taken handle are reported either way (they say nothing about the email).
    """
    if not settings.EMAIL_VERIFICATION_REQUIRED:
        user = user_create(email=email, password=password, handle=handle)
        email_verification_send(user=user, base_url=base_url)
        return user
    email = _normalise_email(email)
    handle = (handle or "").strip()
    if handle and User.objects.filter(handle__iexact=handle).exists():
        raise Conflict("This handle is taken.")
    validate_password(password, user=User(email=email, handle=handle))
    owner = User.objects.filter(email__iexact=email).first()
    if owner is None:
        try:
            user = user_create(email=email, password=password, handle=handle)
        except Conflict:  # a concurrent sign-up took the address: answer as for any taken address
            return None
        email_verification_send(user=user, base_url=base_url)
        return None
    User().set_password(password)  # the hashing time a new account spends, so timing says nothing
    emails.email_send(
        to=owner.email,
        template="signup_existing",
        context={
            "email": owner.email,
            "login_link": base_url + reverse("accounts:login"),
            "reset_link": base_url + reverse("accounts:password-reset"),
        },
    )
    return None


class EmailNotVerified(Exception):
    pass


def login_allowed_check(*, user: User, base_url: str) -> None:
    """With EMAIL_VERIFICATION_REQUIRED on, an unverified account cannot log in yet: a fresh link
    is mailed and EmailNotVerified raised (only after a correct password, so it reveals nothing)."""
    if settings.EMAIL_VERIFICATION_REQUIRED and user.email_verified_at is None:
        email_verification_send(user=user, base_url=base_url)
        raise EmailNotVerified("Confirm your email address first: we have sent you a new link.")


def _token_invalid(message: str = "This link is invalid, expired or already used.") -> Invalid:
    return Invalid(message, field="token")


@transaction.atomic
def email_link_confirm(*, token: str) -> User:
    """Follow a link from email_verification_send or email_change_request: verify the address, or
    move the account to the new one (verified, since the link was read there)."""
    try:
        claims = email_link_token_read(token)
    except InvalidToken as exc:
        raise _token_invalid(str(exc)) from exc
    user = User.objects.select_for_update().filter(pk=claims.get("uid"), is_active=True).first()
    if user is None:
        raise _token_invalid()
    now = timezone.now()
    if claims.get("purpose") == "verify":
        if user.email.lower() != claims["email"].lower() or user.email_verified_at is not None:
            raise _token_invalid()
        user.email_verified_at = now
        user.save(update_fields=["email_verified_at"])
        return user
    if claims.get("purpose") == "change":
        if user.email.lower() != claims["from"].lower():
            raise _token_invalid()
        if User.objects.filter(email__iexact=claims["email"]).exclude(pk=user.pk).exists():
            raise Conflict("That address belongs to another account now.")
        user.email = claims["email"]
        user.email_verified_at = now
        try:
            with transaction.atomic():
                user.save(update_fields=["email", "email_verified_at"])
        except IntegrityError as exc:
            raise Conflict("That address belongs to another account now.") from exc
        return user
    raise _token_invalid()


# ---------------------------------------------------------------- Profile and password


@transaction.atomic
def user_profile_update(*, actor: User, handle: str) -> User:
    handle = (handle or "").strip()
    user = User.objects.select_for_update().get(pk=actor.pk)
    if handle and User.objects.filter(handle__iexact=handle).exclude(pk=user.pk).exists():
        raise Conflict("This handle is taken.")
    user.handle = handle
    try:
        with transaction.atomic():
            user.save(update_fields=["handle"])
    except IntegrityError as exc:
        raise Conflict("This handle is taken.") from exc
    return user


def _current_password_check(user: User, password: str, field: str) -> None:
    if not user.check_password(password or ""):
        raise Invalid("The password is not correct.", field=field)


def email_change_request(*, actor: User, new_email: str, password: str, base_url: str) -> None:
    """Mail a confirmation link to the new address (and a notice to the current one); the email
    changes only when the link is followed (email_link_confirm). The answer is the same whether
    the new address is free or belongs to another account (which gets no mail)."""
    _current_password_check(actor, password, "password")
    new_email = _normalise_email(new_email)
    if new_email.lower() == actor.email.lower():
        raise Invalid("This is already your email address.", field="new_email")
    if User.objects.filter(email__iexact=new_email).exists():
        return
    token = email_link_token_issue(user_id=actor.pk, email=new_email, purpose="change", current_email=actor.email)
    emails.email_send(
        to=new_email,
        template="email_change",
        context={
            "email": new_email,
            "current_email": actor.email,
            "link": emails.link(base_url, "accounts:verify-email", token),
            "valid_for": _valid_for(settings.EMAIL_VERIFICATION_TIMEOUT),
        },
    )
    emails.email_send(to=actor.email, template="email_change_notice", context={})


def _password_set(user: User, new_password: str, field: str) -> None:
    try:
        validate_password(new_password, user=user)
    except DjangoValidationError as exc:
        raise Invalid(exc.messages[0], field=field, details={field: exc.messages}) from exc
    user.set_password(new_password)


@transaction.atomic
def password_change(*, actor: User, current_password: str, new_password: str, keep_session_id=None) -> User:
    """Change the password and revoke every other session (the caller's own, if named, stays)."""
    user = User.objects.select_for_update().get(pk=actor.pk)
    _current_password_check(user, current_password, "current_password")
    _password_set(user, new_password, "new_password")
    user.save(update_fields=["password"])
    auth_sessions_revoke_all(user=user, keep_session_id=keep_session_id)
    return user


def password_reset_request(*, email: str, base_url: str) -> None:
    """Mail a reset link if an active account has this address; say nothing either way."""
    user = User.objects.filter(email__iexact=_normalise_email(email), is_active=True).first()
    if user is None or not user.has_usable_password():
        return
    emails.email_send(
        to=user.email,
        template="password_reset",
        context={
            "email": user.email,
            "link": emails.link(base_url, "accounts:password-reset-confirm", password_reset_token_issue(user)),
            "valid_for": _valid_for(settings.PASSWORD_RESET_TIMEOUT),
        },
    )


def password_reset_user(*, token: str) -> User:
    """The user a reset token is good for; raises Invalid (field token) otherwise."""
    try:
        user_id, django_token = password_reset_token_split(token)
    except InvalidToken as exc:
        raise _token_invalid(str(exc)) from exc
    try:
        user = User.objects.filter(pk=user_id, is_active=True).first()
    except (ValueError, DjangoValidationError):
        user = None
    if user is None or not default_token_generator.check_token(user, django_token):
        raise _token_invalid()
    return user


@transaction.atomic
def password_reset_confirm(*, token: str, new_password: str) -> User:
    """Set the new password, spending the token (it is bound to the old password's hash), and
    revoke every session. Following the link proved the mailbox, so the address counts as verified."""
    user = password_reset_user(token=token)
    user = User.objects.select_for_update().get(pk=user.pk)
    _password_set(user, new_password, "new_password")
    user.email_verified_at = user.email_verified_at or timezone.now()
    user.save(update_fields=["password", "email_verified_at"])
    auth_sessions_revoke_all(user=user)
    return user


# ---------------------------------------------------------------- MFA (TOTP + recovery codes)

_RECOVERY_CODE = re.compile(r"^[a-z2-7]{8}$")
_TOTP_CODE = re.compile(r"^[0-9]{6}$")


class MfaCodeRejected(Exception):
    pass


def mfa_code_normalise(code: str) -> str:
    """A TOTP code (6 digits) or a recovery code (8 base-32 characters, shown as xxxx-xxxx);
    spaces and dashes are ignored. Raises Invalid (field code) for anything else."""
    code = re.sub(r"[\s-]", "", code or "").lower()
    if not (_TOTP_CODE.match(code) or _RECOVERY_CODE.match(code)):
        raise Invalid("Enter the 6-digit code from your app or a recovery code.", field="code")
    return code


def mfa_enabled(*, user: User) -> bool:
    return TOTPDevice.objects.filter(user=user, confirmed=True).exists()


def _lock_key(user) -> str:
    return f"mfa:lock:{user.pk}"


def _failures_key(user) -> str:
    return f"mfa:failures:{user.pk}"


def mfa_lockout_check(*, user: User) -> None:
    """Raise RateLimited while the user's codes are locked (MFA_MAX_FAILURES bad codes in a row)."""
    remaining_ms = state_redis().pttl(_lock_key(user))
    if remaining_ms and remaining_ms > 0:
        raise RateLimited(-(-remaining_ms // 1000))


def _mfa_failure_record(user: User) -> None:
    redis = state_redis()
    pipe = redis.pipeline()
    pipe.incr(_failures_key(user))
    pipe.expire(_failures_key(user), settings.MFA_FAILURE_WINDOW_SECONDS)
    failures, _ = pipe.execute()
    if failures >= settings.MFA_MAX_FAILURES:
        redis.set(_lock_key(user), 1, ex=settings.MFA_LOCKOUT_SECONDS)
        redis.delete(_failures_key(user))


def _mfa_code_verify(user: User, code: str, devices) -> bool:
    """One code against the given device querysets, under the lockout rule."""
    code = mfa_code_normalise(code)
    mfa_lockout_check(user=user)
    with transaction.atomic():
        verified = any(device.verify_token(code) for queryset in devices for device in queryset.select_for_update())
    if verified:
        state_redis().delete(_failures_key(user))
    else:
        _mfa_failure_record(user)
    return verified


def mfa_code_check(*, user: User, code: str) -> bool:
    """A code from the user's authenticator app or one of their recovery codes (spent on use)."""
    return _mfa_code_verify(
        user,
        code,
        [TOTPDevice.objects.filter(user=user, confirmed=True), StaticDevice.objects.filter(user=user)],
    )


@transaction.atomic
def mfa_enrolment_start(*, actor: User) -> TOTPDevice:
    """A new, unconfirmed TOTP secret (replacing an unfinished enrolment); MFA is on once a code
    from it is confirmed (mfa_enrolment_confirm)."""
    if mfa_enabled(user=actor):
        raise Conflict("Two-factor authentication is already on; disable it first.")
    TOTPDevice.objects.filter(user=actor, confirmed=False).delete()
    return TOTPDevice.objects.create(user=actor, name="Authenticator app", confirmed=False)


def mfa_enrolment_cancel(*, actor: User) -> None:
    TOTPDevice.objects.filter(user=actor, confirmed=False).delete()


def _recovery_codes_reset(user: User) -> list[str]:
    StaticDevice.objects.filter(user=user).delete()
    device = StaticDevice.objects.create(user=user, name="Recovery codes")
    codes: set[str] = set()
    while len(codes) < settings.MFA_RECOVERY_CODES:
        codes.add(StaticToken.random_token())
    StaticToken.objects.bulk_create(StaticToken(device=device, token=code) for code in codes)
    return sorted(codes)


def mfa_enrolment_confirm(*, actor: User, code: str, keep_session_id=None) -> list[str]:
    """Turn MFA on with a first code from the new secret; returns the recovery codes (shown once).
    The user's other sessions, opened without the second factor, are revoked."""
    if not TOTPDevice.objects.filter(user=actor, confirmed=False).exists():
        raise Conflict("No two-factor setup is in progress; start one first.")
    if not _mfa_code_verify(actor, code, [TOTPDevice.objects.filter(user=actor, confirmed=False)]):
        raise MfaCodeRejected("The code is not correct.")
    with transaction.atomic():
        TOTPDevice.objects.filter(user=actor, confirmed=False).update(confirmed=True)
        codes = _recovery_codes_reset(actor)
        auth_sessions_revoke_all(user=actor, keep_session_id=keep_session_id)
    return codes


def mfa_recovery_codes_regenerate(*, actor: User, code: str) -> list[str]:
    if not mfa_enabled(user=actor):
        raise Conflict("Two-factor authentication is not on.")
    if not mfa_code_check(user=actor, code=code):
        raise MfaCodeRejected("The code is not correct.")
    with transaction.atomic():
        return _recovery_codes_reset(actor)


def mfa_disable(*, actor: User, code: str, keep_session_id=None) -> None:
    """Turn MFA off with a current code (or a recovery code) and revoke the user's other sessions."""
    if not mfa_enabled(user=actor):
        raise Conflict("Two-factor authentication is not on.")
    if not mfa_code_check(user=actor, code=code):
        raise MfaCodeRejected("The code is not correct.")
    with transaction.atomic():
        TOTPDevice.objects.filter(user=actor).delete()
        StaticDevice.objects.filter(user=actor).delete()
        auth_sessions_revoke_all(user=actor, keep_session_id=keep_session_id)


def pending_login_start(*, user: User, user_agent: str = "", ip_address: str | None = None) -> PendingLogin:
    return PendingLogin.objects.create(
        user=user,
        expires_at=timezone.now() + timedelta(seconds=settings.MFA_PENDING_LOGIN_SECONDS),
        user_agent=user_agent[:300],
        ip_address=ip_address,
    )


def pending_login_complete(*, pending_login_id, code: str) -> User:
    """The user of an open pending login whose second factor is this code; the pending login is
    spent. NotFound for an unknown, expired or spent id; MfaCodeRejected for a wrong code."""
    code = mfa_code_normalise(code)
    try:
        pending = PendingLogin.objects.select_related("user").filter(pk=pending_login_id).first()
    except (ValueError, DjangoValidationError):
        pending = None
    if pending is None or not pending.is_open or not pending.user.is_active:
        raise NotFound("This login has expired or was completed; log in again.")
    if not mfa_code_check(user=pending.user, code=code):
        raise MfaCodeRejected("The code is not correct.")
    spent = PendingLogin.objects.filter(pk=pending.pk, completed_at__isnull=True).update(completed_at=timezone.now())
    if not spent:
        raise NotFound("This login has expired or was completed; log in again.")
    return pending.user


def login_start(
    *, user: User, mfa_code: str | None = None, user_agent: str = "", ip_address: str | None = None
) -> dict:
    """After a correct password: the session's tokens, or, for a user with MFA on and no code given,
    `{"mfa_required": true, "session_id": <pending login id>, "expires_in"}` and no tokens."""
    if not mfa_enabled(user=user):
        return auth_session_start(user=user, user_agent=user_agent, ip_address=ip_address)
    if mfa_code:
        if not mfa_code_check(user=user, code=mfa_code):
            raise MfaCodeRejected("The code is not correct.")
        return auth_session_start(user=user, user_agent=user_agent, ip_address=ip_address)
    pending = pending_login_start(user=user, user_agent=user_agent, ip_address=ip_address)
    return {
        "mfa_required": True,
        "session_id": str(pending.id),
        "expires_in": settings.MFA_PENDING_LOGIN_SECONDS,
    }
