from rest_framework import serializers

from apps.accounts.models import ApiKey, AuthSession, User


class SignupInput(serializers.Serializer):
    email = serializers.EmailField(max_length=254)
    password = serializers.CharField(max_length=256, trim_whitespace=False)
    handle = serializers.RegexField(r"^[A-Za-z0-9_.-]{2,64}$", required=False, allow_blank=True)


class LoginInput(serializers.Serializer):
    email = serializers.EmailField(max_length=254)
    password = serializers.CharField(max_length=256, trim_whitespace=False)
    mfa_code = serializers.CharField(max_length=32, required=False, allow_blank=True)


class RefreshInput(serializers.Serializer):
    refresh_token = serializers.CharField(max_length=200)


class UserOutput(serializers.ModelSerializer):
    user_id = serializers.UUIDField(source="id")
    tenant_id = serializers.UUIDField()

    class Meta:
        model = User
        fields = ["user_id", "email", "email_verified_at", "handle", "role", "plan_tier", "tenant_id", "date_joined"]


class AuthSessionOutput(serializers.ModelSerializer):
    session_id = serializers.UUIDField(source="id")

    class Meta:
        model = AuthSession
        fields = ["session_id", "kind", "created_at", "last_refreshed_at", "expires_at", "user_agent", "ip_address"]


class ApiKeyInput(serializers.Serializer):
    name = serializers.CharField(max_length=100)


class ApiKeyOutput(serializers.ModelSerializer):
    key_id = serializers.UUIDField(source="id")

    class Meta:
        model = ApiKey
        fields = ["key_id", "name", "prefix", "created_at", "last_used_at"]


class ProfileInput(serializers.Serializer):
    handle = serializers.RegexField(r"^[A-Za-z0-9_.-]{2,64}$", allow_blank=True)


class EmailChangeInput(serializers.Serializer):
    new_email = serializers.EmailField(max_length=254)
    password = serializers.CharField(max_length=256, trim_whitespace=False)


class PasswordChangeInput(serializers.Serializer):
    current_password = serializers.CharField(max_length=256, trim_whitespace=False)
    new_password = serializers.CharField(max_length=256, trim_whitespace=False)


class MfaRequestInput(serializers.Serializer):
    session_id = serializers.UUIDField()


class MfaVerifyInput(serializers.Serializer):
    session_id = serializers.UUIDField()
    code = serializers.CharField(max_length=32)


class MfaCodeInput(serializers.Serializer):
    code = serializers.CharField(max_length=32)


class ResetRequestInput(serializers.Serializer):
    email = serializers.EmailField(max_length=254)


class ResetConfirmInput(serializers.Serializer):
    token = serializers.CharField(max_length=500)
    new_password = serializers.CharField(max_length=256, trim_whitespace=False)


class EmailTokenInput(serializers.Serializer):
    token = serializers.CharField(max_length=1000)
