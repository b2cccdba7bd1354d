from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.forms import AdminUserCreationForm, UserChangeForm

from apps.accounts import services
from apps.accounts.models import ApiKey, AuthSession, Tenant, User
from apps.accounts.tokens import API_KEY_PREFIX


class UserCreationForm(AdminUserCreationForm):
    class Meta:
        model = User
        fields = ("email", "handle", "role", "tenant")


class UserEditForm(UserChangeForm):
    class Meta:
        model = User
        fields = "__all__"


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    form = UserEditForm
    add_form = UserCreationForm
    ordering = ("email",)
    list_display = ("email", "handle", "role", "plan_tier", "tenant", "is_active", "date_joined")
    list_filter = ("role", "plan_tier", "is_active")
    search_fields = ("email", "handle")
    fieldsets = (
        (None, {"fields": ("email", "password")}),
        ("Profile", {"fields": ("handle", "role", "plan_tier", "tenant", "is_active")}),
        ("Dates", {"fields": ("last_login", "date_joined", "email_verified_at")}),
    )
    add_fieldsets = (
        (None, {"classes": ("wide",), "fields": ("email", "handle", "role", "tenant", "password1", "password2")}),
    )
    filter_horizontal = ()


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = ("name", "id", "created_at")
    search_fields = ("name",)


@admin.register(AuthSession)
class AuthSessionAdmin(admin.ModelAdmin):
    list_display = ("id", "user", "kind", "created_at", "expires_at", "revoked_at", "ip_address")
    list_filter = ("revoked_at",)
    search_fields = ("user__email",)
    exclude = ("refresh_token_hash", "browser_session_key")
    readonly_fields = ("user", "created_at", "last_refreshed_at", "expires_at", "user_agent", "ip_address")


def _is_set_filter(field: str, title: str, parameter: str, unset_label: str, set_label: str):
    """A list filter on whether `field` is set, with labels that say what that means."""

    class IsSetFilter(admin.SimpleListFilter):
        parameter_name = parameter

        def lookups(self, request, model_admin):
            return [("no", unset_label), ("yes", set_label)]

        def queryset(self, request, queryset):
            if self.value() in ("yes", "no"):
                return queryset.filter(**{f"{field}__isnull": self.value() == "no"})
            return queryset

    IsSetFilter.title = title
    return IsSetFilter


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    """Who holds which key and when it was last used. Only the prefix is shown: the secret was
    shown once, to its owner, and its hash never leaves the database. Keys are made by their owners
    (Settings → API keys); an admin can revoke them."""

    list_display = ("name", "key_prefix", "user", "created_at", "last_used_at", "active")
    list_filter = (
        _is_set_filter("revoked_at", "state", "revoked", "Active", "Revoked"),
        _is_set_filter("last_used_at", "use", "used", "Never used", "Used"),
        "created_at",
    )
    search_fields = ("name", "prefix", "user__email", "user__handle")
    list_select_related = ("user",)
    fields = ("name", "key_prefix", "user", "created_at", "last_used_at", "revoked_at")
    readonly_fields = ("key_prefix",)
    actions = ["revoke"]

    def has_add_permission(self, request):
        return False  # a key's secret is shown once, to the user who makes it

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="Key", ordering="prefix")
    def key_prefix(self, api_key):
        return f"{API_KEY_PREFIX}{api_key.prefix}_…"

    @admin.display(description="Active", boolean=True, ordering="revoked_at")
    def active(self, api_key):
        return api_key.revoked_at is None

    @admin.action(description="Revoke the selected keys")
    def revoke(self, request, queryset):
        keys = list(queryset.filter(revoked_at__isnull=True).select_related("user"))
        for api_key in keys:
            services.api_key_revoke(actor=api_key.user, api_key=api_key)
        self.message_user(request, f"Revoked {len(keys)} key(s).", messages.SUCCESS)
