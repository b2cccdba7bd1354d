"""The /v1 account API (liminallm-compatible): signup, login, refresh, logout, me, sessions."""

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, status
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts import selectors, services
from apps.accounts.authentication import BearerTokenAuthentication
from apps.accounts.models import AuthSession
from apps.accounts.ratelimit import client_ip, rate_limit_hit
from apps.accounts.serializers import (
    ApiKeyInput,
    ApiKeyOutput,
    AuthSessionOutput,
    LoginInput,
    RefreshInput,
    SignupInput,
    UserOutput,
)
from liminal.api import validated
from liminal.celery import QUEUES


class PublicApiView(APIView):
    """Endpoints that take credentials in the body: no session auth, hence no CSRF."""

    authentication_classes: list = []
    permission_classes = [AllowAny]


class SignupApi(PublicApiView):
    @extend_schema(request=SignupInput)
    def post(self, request):
        rate_limit_hit(scope="signup_ip", key=client_ip(request))
        data = validated(SignupInput, request)
        try:
            user = services.user_create(email=data["email"], password=data["password"], handle=data.get("handle", ""))
        except DjangoValidationError as exc:
            raise exceptions.ValidationError({"password": exc.messages}) from exc
        tokens = services.auth_session_start(
            user=user, user_agent=request.headers.get("User-Agent", ""), ip_address=client_ip(request)
        )
        return Response(tokens, status=status.HTTP_201_CREATED)


class LoginApi(PublicApiView):
    @extend_schema(request=LoginInput)
    def post(self, request):
        rate_limit_hit(scope="login_ip", key=client_ip(request))
        data = validated(LoginInput, request)
        rate_limit_hit(scope="login_email", key=data["email"].lower())
        user = services.credentials_check(email=data["email"], password=data["password"])
        if user is None:
            raise exceptions.AuthenticationFailed("Invalid email or password.")
        tokens = services.auth_session_start(
            user=user, user_agent=request.headers.get("User-Agent", ""), ip_address=client_ip(request)
        )
        return Response(tokens)


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


class SessionListApi(APIView):
    def get(self, request):
        sessions = selectors.auth_session_list(actor=request.user)
        current = request.auth.id if isinstance(request.auth, AuthSession) else None
        items = [{**AuthSessionOutput(s).data, "current": s.id == current} for s in sessions]
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
