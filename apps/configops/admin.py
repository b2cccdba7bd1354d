from django.contrib import admin
from django.utils.html import format_html

from apps.artifacts.diff import pretty
from apps.configops.models import ConfigPatch


@admin.register(ConfigPatch)
class ConfigPatchAdmin(admin.ModelAdmin):
    """The audit record of config changes: shown here, changed only through ConfigOps (/config/),
    where decisions, applying and rollback go through the services."""

    list_display = ("id", "artifact", "base_version", "proposer", "status", "created_at", "decided_at", "applied_at")
    list_filter = ("status", "proposer", "artifact__kind")
    search_fields = ("artifact__name", "justification", "failure_reason")
    list_select_related = ("artifact",)
    date_hierarchy = "created_at"
    fields = (
        "artifact",
        "base_version",
        "proposer",
        "proposed_by",
        "justification",
        "status",
        "ops_display",
        "dry_run_display",
        "failure_reason",
        "model_output",
        "decided_by",
        "decided_at",
        "decision_reason",
        "applied_by",
        "applied_at",
        "applied_version",
        "rolled_back_by",
        "rolled_back_at",
        "rollback_version",
        "created_at",
    )
    readonly_fields = fields

    @admin.display(description="Operations")
    def ops_display(self, patch):
        return format_html("<pre>{}</pre>", pretty(patch.ops))

    @admin.display(description="Dry run")
    def dry_run_display(self, patch):
        return format_html("<pre>{}</pre>", pretty(patch.dry_run))

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
