"""The /v1 account API (liminallm-compatible): signup, login, refresh, logout, me, sessions,
MFA, password reset and change, email verification and change."""

from django.conf import settings
from django.contrib.auth import update_session_auth_hash
from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, status
from rest_framework.authentication import SessionAuthentication
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts import selectors, services
from apps.accounts.authentication import BearerTokenAuthentication, current_session_id
from apps.accounts.emails import base_url_of
from apps.accounts.mfa import totp_enrolment
from apps.accounts.models import AuthSession
from apps.accounts.ratelimit import client_ip, rate_limit_hit
from apps.accounts.serializers import (
    ApiKeyInput,
    ApiKeyOutput,
    AuthSessionOutput,
    EmailChangeInput,
    EmailTokenInput,
    LoginInput,
    MfaCodeInput,
    MfaRequestInput,
    MfaVerifyInput,
    PasswordChangeInput,
    ProfileInput,
    RefreshInput,
    ResetConfirmInput,
    ResetRequestInput,
    SignupInput,
    UserOutput,
)
from liminal.api import validated
from liminal.celery import QUEUES
from liminal.errors import Forbidden, NotFound

VERIFICATION_SENT = "Check your inbox: we have sent a link to confirm the address."


def _client(request) -> dict:
    return {"user_agent": request.headers.get("User-Agent", ""), "ip_address": client_ip(request)}


def _wrong_code(field: str = "code") -> exceptions.ValidationError:
    return exceptions.ValidationError({field: ["The code is not correct."]})


class PublicApiView(APIView):
    """Endpoints that take credentials in the body: no session auth, hence no CSRF."""

    authentication_classes: list = []
    permission_classes = [AllowAny]


class SignupApi(PublicApiView):
    @extend_schema(request=SignupInput)
    def post(self, request):
        """201 with the login fields, as /v1/auth/login. With EMAIL_VERIFICATION_REQUIRED on: 202
        `{verification_required: true}` and no tokens, the same for a new and a registered address
        (its owner is emailed instead); log in once the emailed link is followed."""
        rate_limit_hit(scope="signup_ip", key=client_ip(request))
        data = validated(SignupInput, request)
        try:
            user = services.account_signup(
                email=data["email"],
                password=data["password"],
                handle=data.get("handle", ""),
                base_url=base_url_of(request),
            )
        except DjangoValidationError as exc:
            raise exceptions.ValidationError({"password": exc.messages}) from exc
        if user is None:
            return Response(
                {"verification_required": True, "detail": VERIFICATION_SENT}, status=status.HTTP_202_ACCEPTED
            )
        tokens = services.auth_session_start(user=user, **_client(request))
        return Response(tokens, status=status.HTTP_201_CREATED)


class LoginApi(PublicApiView):
    @extend_schema(request=LoginInput)
    def post(self, request):
        """The login fields (tokens, `mfa_required: false`). For a user with MFA on and no
        `mfa_code`: `{mfa_required: true, session_id, expires_in}` and no tokens, where session_id
        is a pending login to complete at /v1/auth/mfa/verify. A wrong `mfa_code` is a 401; five
        wrong codes in a row lock the user's codes for five minutes (429)."""
        rate_limit_hit(scope="login_ip", key=client_ip(request))
        data = validated(LoginInput, request)
        rate_limit_hit(scope="login_email", key=data["email"].lower())
        user = services.credentials_check(email=data["email"], password=data["password"])
        if user is None:
            raise exceptions.AuthenticationFailed("Invalid email or password.")
        try:
            services.login_allowed_check(user=user, base_url=base_url_of(request))
            result = services.login_start(user=user, mfa_code=data.get("mfa_code") or None, **_client(request))
        except services.EmailNotVerified as exc:
            raise Forbidden(str(exc)) from exc
        except services.MfaCodeRejected as exc:
            raise exceptions.AuthenticationFailed("The MFA code is not correct.") from exc
        return Response(result)


class RefreshApi(PublicApiView):
    @extend_schema(request=RefreshInput)
    def post(self, request):
        rate_limit_hit(scope="refresh", key=client_ip(request))
        data = validated(RefreshInput, request)
        try:
            tokens = services.auth_session_refresh(refresh_token=data["refresh_token"])
        except services.InvalidRefreshToken as exc:
            raise exceptions.AuthenticationFailed(str(exc)) from exc
        return Response(tokens)


class LogoutApi(APIView):
    authentication_classes = [BearerTokenAuthentication]

    def post(self, request):
        if not isinstance(request.auth, AuthSession):
            raise exceptions.ValidationError({"token": ["Log out with a session access token, not an API key."]})
        services.auth_session_revoke(session=request.auth)
        return Response({"revoked": True, "session_id": str(request.auth.id)})


class MeApi(APIView):
    def get(self, request):
        return Response(UserOutput(selectors.user_profile(actor=request.user)).data)

    @extend_schema(request=ProfileInput)
    def patch(self, request):
        """Change the handle (blank clears it); 409 when another account has it."""
        data = validated(ProfileInput, request)
        services.user_profile_update(actor=request.user, handle=data["handle"])
        return Response(UserOutput(selectors.user_profile(actor=request.user)).data)


class EmailChangeApi(APIView):
    @extend_schema(request=EmailChangeInput)
    def post(self, request):
        """Ask to move the account to `new_email` (the current password confirms it's you). A link
        goes to the new address and the change happens when it is posted to /v1/auth/verify_email.
        202 whether or not the new address belongs to another account."""
        rate_limit_hit(scope="account_user", key=str(request.user.pk))
        data = validated(EmailChangeInput, request)
        services.email_change_request(
            actor=request.user, new_email=data["new_email"], password=data["password"], base_url=base_url_of(request)
        )
        return Response({"sent": True, "detail": VERIFICATION_SENT}, status=status.HTTP_202_ACCEPTED)


class PasswordChangeApi(APIView):
    @extend_schema(request=PasswordChangeInput)
    def post(self, request):
        """Change the password; every other session of the user is revoked (this one stays)."""
        rate_limit_hit(scope="account_user", key=str(request.user.pk))
        data = validated(PasswordChangeInput, request)
        user = services.password_change(
            actor=request.user,
            current_password=data["current_password"],
            new_password=data["new_password"],
            keep_session_id=current_session_id(request),
        )
        if isinstance(request.successful_authenticator, SessionAuthentication):
            # A browser calling with its cookie: its own login stays valid under the new password.
            update_session_auth_hash(request._request, user)
            services.browser_session_rekey(
                session_id=current_session_id(request), session_key=request.session.session_key
            )
        return Response({"changed": True})


class SessionListApi(APIView):
    def get(self, request):
        sessions = selectors.auth_session_list(actor=request.user)
        current = str(current_session_id(request))
        items = [{**AuthSessionOutput(s).data, "current": str(s.id) == current} for s in sessions]
        return Response({"items": items})


class SessionDetailApi(APIView):
    def delete(self, request, session_id):
        session = selectors.auth_session_get(actor=request.user, session_id=session_id)
        if session is None:
            raise exceptions.NotFound("Session not found.")
        services.auth_session_revoke(session=session)
        return Response({"revoked": True, "session_id": str(session.id)})


class IsPlatformAdmin(IsAuthenticated):
    message = "Administrator role required."

    def has_permission(self, request, view):
        return super().has_permission(request, view) and request.user.is_admin


class AdminSettingsApi(APIView):
    permission_classes = [IsPlatformAdmin]

    def get(self, request):
        return Response(
            {
                "debug": settings.DEBUG,
                "model_path": settings.MODEL_PATH or "embedded:SmolLM2-135M-Instruct",
                "shared_fs_root": str(settings.SHARED_FS_ROOT),
                "max_upload_bytes": settings.MAX_UPLOAD_BYTES,
                "access_token_ttl_seconds": settings.ACCESS_TOKEN_TTL_SECONDS,
                "refresh_token_ttl_seconds": settings.REFRESH_TOKEN_TTL_SECONDS,
                "rate_limits": {
                    scope: {"limit": n, "window_seconds": w} for scope, (n, w) in settings.RATE_LIMITS.items()
                },
                "queues": list(QUEUES),
            }
        )


class ApiKeyListApi(APIView):
    def get(self, request):
        keys = selectors.api_key_list(actor=request.user)
        return Response({"items": [ApiKeyOutput(k).data for k in keys]})

    @extend_schema(request=ApiKeyInput)
    def post(self, request):
        data = validated(ApiKeyInput, request)
        api_key, key = services.api_key_create(actor=request.user, name=data["name"])
        return Response({**ApiKeyOutput(api_key).data, "key": key}, status=status.HTTP_201_CREATED)


class ApiKeyDetailApi(APIView):
    def delete(self, request, key_id):
        api_key = selectors.api_key_get(actor=request.user, key_id=key_id)
        if api_key is None:
            raise exceptions.NotFound("API key not found.")
        services.api_key_revoke(actor=request.user, api_key=api_key)
        return Response({"revoked": True, "key_id": str(api_key.id)})


class MfaRequestApi(APIView):
    @extend_schema(request=MfaRequestInput)
    def post(self, request):
        """Start TOTP enrolment. `session_id` is the caller's own session (the session_id its login
        answered with; another user's, or a revoked one, is a 404). Answers `otpauth_uri`, the
        `secret` in base 32, `qr_code` (an SVG data URI of the URI), algorithm, digits and period.
        MFA is on once a code from the app is posted to /v1/auth/mfa/verify with the same
        session_id; that answer carries the ten recovery codes. 409 if MFA is already on."""
        rate_limit_hit(scope="account_user", key=str(request.user.pk))
        data = validated(MfaRequestInput, request)
        session = selectors.auth_session_owned(actor=request.user, session_id=data["session_id"])
        if session is None:
            raise NotFound("Session not found.")
        device = services.mfa_enrolment_start(actor=request.user)
        return Response({"session_id": str(session.id), **totp_enrolment(device)})


class MfaVerifyApi(APIView):
    permission_classes = [AllowAny]

    @extend_schema(request=MfaVerifyInput)
    def post(self, request):
        """Answer a code (6 digits from the app, or a recovery code) for `session_id`, which is
        either
        - the pending login from /v1/auth/login's `mfa_required: true` answer (no credentials
          needed): answers the usual login fields, for a new session; a wrong code is a 401; or
        - the caller's own session (authenticated) after /v1/auth/mfa/request: turns MFA on and
          answers the usual login fields for a new session plus `recovery_codes` (shown once);
          every earlier session of the user, this one included, is revoked, since they were opened
          without the second factor. A wrong code is a 400 naming `code`.
        Unknown, expired or spent ids are a 404. Five wrong codes in a row lock the user's codes
        for five minutes (429)."""
        rate_limit_hit(scope="mfa_ip", key=client_ip(request))
        data = validated(MfaVerifyInput, request)
        if request.user.is_authenticated:
            own = selectors.auth_session_owned(actor=request.user, session_id=data["session_id"])
            if own is not None:
                try:
                    codes = services.mfa_enrolment_confirm(actor=request.user, code=data["code"])
                except services.MfaCodeRejected as exc:
                    raise _wrong_code() from exc
                tokens = services.auth_session_start(user=request.user, **_client(request))
                return Response({**tokens, "recovery_codes": codes})
        try:
            user = services.pending_login_complete(pending_login_id=data["session_id"], code=data["code"])
        except services.MfaCodeRejected as exc:
            raise exceptions.AuthenticationFailed("The MFA code is not correct.") from exc
        return Response(services.auth_session_start(user=user, **_client(request)))


class MfaStatusApi(APIView):
    def get(self, request):
        """`enabled`: a code is needed to log in; `configured`: an authenticator secret exists
        (confirmed, or an enrolment not yet confirmed); `recovery_codes_left`."""
        return Response(selectors.mfa_status(actor=request.user))


class MfaDisableApi(APIView):
    @extend_schema(request=MfaCodeInput)
    def post(self, request):
        """Turn MFA off with a current code or a recovery code (400 naming `code` when wrong; 409
        when MFA is off). Every other session of the user is revoked."""
        rate_limit_hit(scope="account_user", key=str(request.user.pk))
        data = validated(MfaCodeInput, request)
        try:
            services.mfa_disable(actor=request.user, code=data["code"], keep_session_id=current_session_id(request))
        except services.MfaCodeRejected as exc:
            raise _wrong_code() from exc
        return Response(selectors.mfa_status(actor=request.user))


class PasswordResetRequestApi(PublicApiView):
    @extend_schema(request=ResetRequestInput)
    def post(self, request):
        """Email a reset link (valid 30 minutes, once) if an account has this address. The answer
        is the same whether or not one does."""
        rate_limit_hit(scope="reset_ip", key=client_ip(request))
        data = validated(ResetRequestInput, request)
        rate_limit_hit(scope="reset_email", key=data["email"].lower())
        services.password_reset_request(email=data["email"], base_url=base_url_of(request))
        return Response(
            {"sent": True, "detail": "If an account has this address, a reset link is on its way."},
            status=status.HTTP_202_ACCEPTED,
        )


class PasswordResetConfirmApi(PublicApiView):
    @extend_schema(request=ResetConfirmInput)
    def post(self, request):
        """Set a new password with the emailed token (the `token` query parameter of the link).
        Every session of the user is revoked; log in again."""
        rate_limit_hit(scope="reset_ip", key=client_ip(request))
        data = validated(ResetConfirmInput, request)
        services.password_reset_confirm(token=data["token"], new_password=data["new_password"])
        return Response({"reset": True})


class VerifyEmailApi(PublicApiView):
    @extend_schema(request=EmailTokenInput)
    def post(self, request):
        """Confirm an address with the emailed token: the sign-up address, or the new address of an
        email change (which then takes effect). 400 naming `token` for a bad, expired or used one."""
        rate_limit_hit(scope="verify_email_ip", key=client_ip(request))
        data = validated(EmailTokenInput, request)
        user = services.email_link_confirm(token=data["token"])
        return Response({"verified": True, "email": user.email})
