import uuid

from django.contrib.auth.models import AbstractBaseUser, BaseUserManager, PermissionsMixin
from django.db import models
from django.db.models.functions import Lower
from django.utils import timezone


class Tenant(models.Model):
    """An organisation boundary; every user belongs to exactly one (a personal one by default)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self):
        return self.name


class UserManager(BaseUserManager):
    use_in_migrations = True

    def get_by_natural_key(self, email):
        return self.get(email__iexact=email)

    def create_user(self, email, password=None, **fields):
        from apps.accounts.services import user_create

        return user_create(email=email, password=password, **fields)

    def create_superuser(self, email, password=None, **fields):
        from apps.accounts.services import user_create

        return user_create(email=email, password=password, role=User.Role.ADMIN, **fields)


class User(AbstractBaseUser, PermissionsMixin):
    class Role(models.TextChoices):
        USER = "user", "User"
        ADMIN = "admin", "Admin"

    class Plan(models.TextChoices):
        FREE = "free", "Free"
        PRO = "pro", "Pro"
        ENTERPRISE = "enterprise", "Enterprise"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    email = models.EmailField(max_length=254, unique=True)
    handle = models.CharField(max_length=64, blank=True)
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.USER)
    plan_tier = models.CharField(max_length=16, choices=Plan.choices, default=Plan.FREE)
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="users")
    is_active = models.BooleanField(default=True)
    date_joined = models.DateTimeField(default=timezone.now)
    # When the owner of `email` proved it by following a link; cleared when the email changes.
    email_verified_at = models.DateTimeField(null=True, blank=True)

    objects = UserManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS: list[str] = []

    class Meta:
        constraints = [
            models.UniqueConstraint(Lower("email"), name="accounts_user_email_ci_unique"),
            models.UniqueConstraint(
                Lower("handle"), condition=~models.Q(handle=""), name="accounts_user_handle_ci_unique"
            ),
        ]

    def __str__(self):
        return self.email

    @property
    def is_admin(self) -> bool:
        return self.role == self.Role.ADMIN

    @property
    def is_staff(self) -> bool:
        return self.is_admin

    def save(self, *args, **kwargs):
        # The role is the single source of truth for Django's superuser flag (admin site access).
        self.is_superuser = self.is_admin
        super().save(*args, **kwargs)


class AuthSession(models.Model):
    """A revocable login. API access tokens name it, so revoking it stops them at once; a browser
    login (kind=browser) has one too, named in its Django session, so the sessions page lists every
    device and revoking one logs that browser out on its next request (BrowserSessionMiddleware).
    A browser row's refresh token is a random secret never handed out."""

    class Kind(models.TextChoices):
        API = "api", "API"
        BROWSER = "browser", "Browser"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="auth_sessions")
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.API)
    refresh_token_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    last_refreshed_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)
    user_agent = models.CharField(max_length=300, blank=True)
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    browser_session_key = models.CharField(max_length=64, blank=True)

    class Meta:
        indexes = [models.Index(fields=["user", "revoked_at"])]

    def __str__(self):
        return f"session {self.id} of {self.user_id}"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None and self.expires_at > timezone.now()


class RotatedRefreshToken(models.Model):
    """A refresh token its session has rotated away from. Presented again, it means the token
    was copied (by an attacker, or the client lost track): the whole session is revoked, the
    newer refresh token and its access tokens with it (OAuth 2.0 refresh token reuse detection)."""

    token_hash = models.CharField(max_length=64, unique=True)
    session = models.ForeignKey(AuthSession, on_delete=models.CASCADE, related_name="rotated_refresh_tokens")
    rotated_at = models.DateTimeField(default=timezone.now)

    def __str__(self):
        return f"rotated refresh token of {self.session_id}"


class ApiKey(models.Model):
    """A long-lived bearer credential for integrations (e.g. OpenAI-compatible clients).

    Only a hash of the secret is stored; the full key is shown once, when created.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, unique=True)
    key_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self):
        return f"{self.name} ({self.prefix}…)"


class PendingLogin(models.Model):
    """A login whose password was right, waiting for its second factor (MFA). Its id is the
    `session_id` that /v1/auth/login answers with `mfa_required: true` and that
    /v1/auth/mfa/verify takes with the code; it is used once and expires soon."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="pending_logins")
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    completed_at = models.DateTimeField(null=True, blank=True)
    user_agent = models.CharField(max_length=300, blank=True)
    ip_address = models.GenericIPAddressField(null=True, blank=True)

    def __str__(self):
        return f"pending login {self.id} of {self.user_id}"

    @property
    def is_open(self) -> bool:
        return self.completed_at is None and self.expires_at > timezone.now()
