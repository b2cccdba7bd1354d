from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import Http404, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.views.decorators.http import require_POST

from apps.artifacts import services
from apps.artifacts.diff import body_diff, pretty
from apps.artifacts.models import Artifact, ArtifactVersion
from apps.artifacts.validation import check_storable
from liminal.errors import DomainError, Invalid


class PrettyJSONField(forms.JSONField):
    """A JSON editor: a monospace textarea holding the body pretty-printed."""

    widget = forms.Textarea(attrs={"rows": 30, "cols": 100, "spellcheck": "false", "class": "vLargeTextField"})

    def prepare_value(self, value):
        if isinstance(value, forms.fields.InvalidJSONInput):
            return value
        return pretty(value)


class _DryRun(Exception):
    pass


# Service errors name API fields; the form's fields are named a little differently.
FORM_FIELD = {"schema": "body", "name": "name", "description": "description", "visibility": "visibility"}


class ArtifactForm(forms.ModelForm):
    """Edits go through the services: the form runs the write in a savepoint and undoes it, so
    whatever the services refuse (a body fault, by JSON pointer) is shown on the form, and
    `save_model` makes the real version."""

    body = PrettyJSONField(help_text="The artifact's body as JSON. Saving it makes a new version.")
    change_note = forms.CharField(
        required=False,
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 2, "cols": 100}),
        help_text="Why this change; kept with the new version.",
    )
    actor = None  # the admin making the change, set by ArtifactAdmin.get_form

    class Meta:
        model = Artifact
        fields = ["name", "visibility", "description"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not self.instance._state.adding and "body" in self.fields:
            self.fields["body"].initial = self.instance.body

    def clean(self):
        cleaned = super().clean()
        if self.errors:
            return cleaned
        try:
            check_storable(cleaned["body"])
            with transaction.atomic():
                self.write()
                raise _DryRun
        except _DryRun:
            pass
        except DomainError as exc:
            self._add_domain_error(exc)
        return cleaned

    def _add_domain_error(self, exc: DomainError) -> None:
        details = exc.details or {}
        if not isinstance(exc, Invalid):
            self.add_error(None, exc.message)
            return
        field = next((FORM_FIELD[key] for key in details if key in FORM_FIELD and key in self.fields), None)
        field = field or ("body" if "body_pointer" in details else None)
        message = next((value[0] for key, value in details.items() if key in FORM_FIELD and value), exc.message)
        pointer = details.get("body_pointer")
        self.add_error(field, f"At {pointer}: {message}" if pointer else message)

    def write(self) -> Artifact:
        data = self.cleaned_data
        if self.instance._state.adding:
            return services.artifact_create(
                actor=self.actor,
                name=data["name"],
                description=data["description"],
                visibility=data["visibility"],
                body=data["body"],
                change_note=data["change_note"],
            )
        return services.artifact_update(
            actor=self.actor,
            artifact=self.instance,
            body=data["body"],
            description=data["description"],
            change_note=data["change_note"] or "Edited in the admin.",
        )


class OwnershipFilter(admin.SimpleListFilter):
    title = "owner"
    parameter_name = "global"

    def lookups(self, request, model_admin):
        return [("yes", "None (global)"), ("no", "A user")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(owner__isnull=True)
        if self.value() == "no":
            return queryset.filter(owner__isnull=False)
        return queryset


@admin.register(Artifact)
class ArtifactAdmin(admin.ModelAdmin):
    form = ArtifactForm
    list_display = ("name", "kind", "owner_display", "visibility", "current_version_number", "updated_at")
    list_filter = ("kind", "visibility", OwnershipFilter)
    search_fields = ("name", "description")
    list_select_related = ("owner", "current_version")
    ordering = ("kind", "name")
    readonly_fields = (
        "id",
        "kind",
        "type",
        "owner_display",
        "current_version_number",
        "created_at",
        "updated_at",
        "body_display",
    )
    change_form_template = "admin/artifacts/artifact/change_form.html"

    @admin.display(description="Owner", ordering="owner__email")
    def owner_display(self, artifact):
        return artifact.owner or "— (global)"

    @admin.display(description="Version", ordering="current_version__version")
    def current_version_number(self, artifact):
        return artifact.version_number

    @admin.display(description="Body")
    def body_display(self, artifact):
        return format_html("<pre>{}</pre>", pretty(artifact.body))

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["name", "visibility", "description", "body", "change_note"]
        fields = ["id", "name", "kind", "type", "owner_display", "visibility", "current_version_number"]
        fields += ["created_at", "updated_at", "description"]
        if self.has_change_permission(request, obj):
            return [*fields, "body", "change_note"]
        return [*fields, "body_display"]

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else (*self.readonly_fields, "name", "visibility")

    def get_form(self, request, obj=None, **kwargs):
        form = super().get_form(request, obj, **kwargs)
        return type(form.__name__, (form,), {"actor": request.user})

    def has_change_permission(self, request, obj=None):
        """The services let admins write global artifacts and their own; others' are read-only here."""
        allowed = super().has_change_permission(request, obj)
        return allowed and (obj is None or obj.owner_id in (None, request.user.pk))

    def has_delete_permission(self, request, obj=None):
        allowed = super().has_delete_permission(request, obj)
        return allowed and (obj is None or obj.owner_id in (None, request.user.pk))

    def save_model(self, request, obj, form, change):
        artifact = form.write()
        obj.pk = artifact.pk
        obj._state.adding = False
        obj.refresh_from_db()

    def save_related(self, request, form, formsets, change):
        """The body and versions are written by the services; there is nothing related to save."""

    def delete_model(self, request, obj):
        services.artifact_delete(actor=request.user, artifact=obj)

    def delete_queryset(self, request, queryset):
        for artifact in queryset:
            services.artifact_delete(actor=request.user, artifact=artifact)

    def get_deleted_objects(self, objs, request):
        """Versions cannot be deleted on their own, but they go with their artifact."""
        deleted, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
        perms_needed.discard(ArtifactVersion._meta.verbose_name)
        return deleted, counts, perms_needed, protected

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("<path:object_id>/diff/", wrap(self.diff_view), name="artifacts_artifact_diff"),
            path(
                "<path:object_id>/revert/<int:version>/",
                wrap(require_POST(self.revert_view)),
                name="artifacts_artifact_revert",
            ),
            *super().get_urls(),
        ]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        artifact = self.get_object(request, unquote(object_id))
        if artifact is not None:
            extra_context = {
                **(extra_context or {}),
                "versions": artifact.versions.select_related("author", "parent").order_by("-version"),
                "can_revert": self.has_change_permission(request, artifact),
            }
        return super().change_view(request, object_id, form_url, extra_context)

    def _artifact_or_404(self, request, object_id) -> Artifact:
        artifact = self.get_object(request, unquote(object_id))
        if artifact is None:
            raise Http404("No such artifact.")
        return artifact

    def diff_view(self, request, object_id):
        artifact = self._artifact_or_404(request, object_id)
        if not self.has_view_or_change_permission(request, artifact):
            raise PermissionDenied
        newest = artifact.version_number
        try:
            b = int(request.GET.get("b", newest))
            a = int(request.GET.get("a", max(b - 1, 1)))
        except ValueError as exc:
            raise Http404("Versions are numbers.") from exc
        versions = {version.version: version for version in artifact.versions.filter(version__in=[a, b])}
        if a not in versions or b not in versions:
            raise Http404("No such version.")
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"{artifact}: version {a} → version {b}",
            "artifact": artifact,
            "a": versions[a],
            "b": versions[b],
            "diff": body_diff(
                versions[a].body, versions[b].body, before_label=f"version {a}", after_label=f"version {b}"
            ),
            "numbers": list(artifact.versions.order_by("-version").values_list("version", flat=True)),
            "can_revert": self.has_change_permission(request, artifact),
        }
        return TemplateResponse(request, "admin/artifacts/artifact/diff.html", context)

    def revert_view(self, request, object_id, version):
        artifact = self._artifact_or_404(request, object_id)
        if not self.has_change_permission(request, artifact):
            raise PermissionDenied
        try:
            services.artifact_revert(actor=request.user, artifact=artifact, version=version)
        except DomainError as exc:
            self.message_user(request, exc.message, messages.ERROR)
        else:
            artifact.refresh_from_db()
            self.log_change(request, artifact, f"Reverted to version {version}.")
            self.message_user(request, f"Reverted to version {version}: this is now version {artifact.version_number}.")
        return HttpResponseRedirect(reverse("admin:artifacts_artifact_change", args=[artifact.pk]))


@admin.register(ArtifactVersion)
class ArtifactVersionAdmin(admin.ModelAdmin):
    """Versions are immutable: listed and shown, never added, changed or deleted here."""

    list_display = ("artifact", "version", "created_by", "author", "change_note", "created_at")
    list_filter = ("created_by", "artifact__kind")
    search_fields = ("artifact__name", "change_note")
    list_select_related = ("artifact", "author")
    fields = ("artifact", "version", "created_by", "author", "parent", "change_note", "created_at", "body_display")
    readonly_fields = fields

    @admin.display(description="Body")
    def body_display(self, version):
        return format_html("<pre>{}</pre>", pretty(version.body))

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
