from rest_framework import serializers

from apps.accounts.models import ApiKey, AuthSession, User


class SignupInput(serializers.Serializer):
    email = serializers.EmailField(max_length=254)
    password = serializers.CharField(max_length=256, trim_whitespace=False)
    handle = serializers.RegexField(r"^[A-Za-z0-9_.-]{2,64}$", required=False, allow_blank=True)


class LoginInput(serializers.Serializer):
    email = serializers.EmailField(max_length=254)
    password = serializers.CharField(max_length=256, trim_whitespace=False)


class RefreshInput(serializers.Serializer):
    refresh_token = serializers.CharField(max_length=200)


class UserOutput(serializers.ModelSerializer):
    user_id = serializers.UUIDField(source="id")
    tenant_id = serializers.UUIDField()

    class Meta:
        model = User
        fields = ["user_id", "email", "handle", "role", "plan_tier", "tenant_id", "date_joined"]


class AuthSessionOutput(serializers.ModelSerializer):
    session_id = serializers.UUIDField(source="id")

    class Meta:
        model = AuthSession
        fields = ["session_id", "created_at", "last_refreshed_at", "expires_at", "user_agent", "ip_address"]


class ApiKeyInput(serializers.Serializer):
    name = serializers.CharField(max_length=100)


class ApiKeyOutput(serializers.ModelSerializer):
    key_id = serializers.UUIDField(source="id")

    class Meta:
        model = ApiKey
        fields = ["key_id", "name", "prefix", "created_at", "last_used_at"]
