import json

from django import forms
from django.contrib import admin, messages
from django.template.defaultfilters import truncatechars
from django.urls import path, reverse
from django.utils.html import format_html

from apps.training import adapters, services
from apps.training.models import AdapterVersion, MemoryItem, PreferenceEvent, TrainingJob
from liminal.errors import DomainError


def _pretty(value) -> str:
    text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)
    return format_html('<pre class="pretty-json">{}</pre>', text)


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


ExcludedFilter = _is_set_filter("excluded_at", "training use", "excluded", "Live", "Forgotten (excluded)")
SupersededFilter = _is_set_filter(
    "superseded_by", "correction memory", "superseded", "Current", "Replaced by a newer correction"
)


@admin.register(PreferenceEvent)
class PreferenceEventAdmin(admin.ModelAdmin):
    """Every signal, with the receipt of the answer it judged. `corrections/` is the same list
    narrowed to corrections, showing what correction memory replays."""

    list_display = ("kind", "feedback", "owner", "prompt_excerpt", "is_evaluation", "live", "created_at")
    corrections_list_display = ("prompt_excerpt", "correction_excerpt", "owner", "replaced_by", "live", "created_at")
    list_filter = ("kind", "feedback", ExcludedFilter, "is_evaluation")
    corrections_list_filter = (SupersededFilter, ExcludedFilter, "is_evaluation")
    search_fields = ("prompt", "answer", "correction", "owner__email")
    list_select_related = ("owner",)
    date_hierarchy = "created_at"
    actions = ["forget"]
    fieldsets = (
        (
            "Judgement",
            {"fields": ("kind", "feedback", "explicit_signal", "score", "weight", "reasons", "notes", "created_at")},
        ),
        (
            "The answer judged",
            {
                "fields": (
                    "owner",
                    "judged_message",
                    "conversation",
                    "prompt",
                    "answer",
                    "correction",
                    "rejected_message",
                    "rejected_answer",
                    "replaced_by",
                    "context_text",
                )
            },
        ),
        ("Receipt", {"fields": ("receipt_pretty", "routing_trace_pretty", "adapter_gates_pretty")}),
        ("Training", {"fields": ("is_evaluation", "cluster_id", "excluded_at")}),
    )
    # Admins may mark evaluation traffic and tune a signal's weight; what the user said is theirs.
    readonly_fields = (
        "kind",
        "feedback",
        "explicit_signal",
        "score",
        "reasons",
        "notes",
        "created_at",
        "owner",
        "judged_message",
        "conversation",
        "prompt",
        "answer",
        "correction",
        "rejected_message",
        "rejected_answer",
        "replaced_by",
        "context_text",
        "receipt_pretty",
        "routing_trace_pretty",
        "adapter_gates_pretty",
        "excluded_at",
    )

    def get_urls(self):
        corrections = path(
            "corrections/",
            self.admin_site.admin_view(self.corrections_view),
            name="training_preferenceevent_corrections",
        )
        return [corrections, *super().get_urls()]

    def corrections_view(self, request):
        return self.changelist_view(request, extra_context={"title": "Corrections", "corrections_only": True})

    @staticmethod
    def _corrections_only(request) -> bool:
        match = request.resolver_match
        return bool(match) and match.url_name == "training_preferenceevent_corrections"

    def get_queryset(self, request):
        events = super().get_queryset(request)
        if self._corrections_only(request):
            events = events.filter(kind=PreferenceEvent.Kind.CORRECTION).select_related("superseded_by")
        return events

    def get_list_display(self, request):
        return self.corrections_list_display if self._corrections_only(request) else self.list_display

    def get_list_filter(self, request):
        return self.corrections_list_filter if self._corrections_only(request) else self.list_filter

    def has_add_permission(self, request):
        return False  # signals come from users' judgements, never from the admin

    @admin.display(description="Prompt")
    def prompt_excerpt(self, event):
        return truncatechars(event.prompt, 80)

    @admin.display(description="Correction")
    def correction_excerpt(self, event):
        return truncatechars(event.correction, 120)

    @admin.display(description="Live", boolean=True, ordering="excluded_at")
    def live(self, event):
        return event.excluded_at is None

    @admin.display(description="Replaced by")
    def replaced_by(self, event):
        if event.superseded_by_id is None:
            return "–"
        url = reverse("admin:training_preferenceevent_change", args=[event.superseded_by_id])
        label = truncatechars(event.superseded_by.correction, 60) or "a newer correction"
        return format_html('<a href="{}">{}</a>', url, label)

    @admin.display(description="Judged message")
    def judged_message(self, event):
        if event.message_id is None:
            return "– (deleted)"
        return format_html(
            "{} <span class='help'>({} message {}, status {})</span>",
            truncatechars(event.message.content, 200),
            event.message.role,
            event.message_id,
            event.message.status,
        )

    @admin.display(description="Receipt")
    def receipt_pretty(self, event):
        return _pretty(event.receipt)

    @admin.display(description="Routing trace")
    def routing_trace_pretty(self, event):
        return _pretty(event.routing_trace)

    @admin.display(description="Adapter gates")
    def adapter_gates_pretty(self, event):
        return _pretty(event.adapter_gates)

    @admin.action(description="Forget: exclude from training and drop the user's words")
    def forget(self, request, queryset):
        events = list(queryset.filter(excluded_at__isnull=True).select_related("owner"))
        for event in events:
            services.event_forget(actor=event.owner, event=event)
        self.message_user(request, f"Forgot {len(events)} signal(s).", messages.SUCCESS)


class MemoryItemForm(forms.ModelForm):
    text = forms.CharField(widget=forms.Textarea(attrs={"rows": 4, "cols": 80}), max_length=services.MEMORY_TEXT_MAX)

    class Meta:
        model = MemoryItem
        fields = ["text", "pinned"]


@admin.register(MemoryItem)
class MemoryItemAdmin(admin.ModelAdmin):
    """Users' memory items. Edits and deletes go through the services (a new text is re-embedded;
    a delete also forgets the signals on the answers to the message that asked for it)."""

    form = MemoryItemForm
    list_display = ("text_excerpt", "owner", "pinned", "created_at", "updated_at")
    list_filter = ("pinned", ("owner", admin.RelatedOnlyFieldListFilter))
    search_fields = ("text", "owner__email")
    list_select_related = ("owner",)
    date_hierarchy = "created_at"
    fields = ("owner", "text", "pinned", "source_message", "created_at", "updated_at")
    readonly_fields = ("owner", "source_message", "created_at", "updated_at")

    def has_add_permission(self, request):
        return False  # users add their own, in a chat or on their Memory page

    @admin.display(description="Text")
    def text_excerpt(self, item):
        return truncatechars(item.text, 100)

    def save_model(self, request, obj, form, change):
        services.memory_update(actor=obj.owner, item=obj, text=form.cleaned_data["text"], pinned=obj.pinned)

    def delete_model(self, request, obj):
        services.memory_forget(actor=obj.owner, item=obj)

    def delete_queryset(self, request, queryset):
        for item in queryset.select_related("owner"):
            services.memory_forget(actor=item.owner, item=item)


@admin.register(AdapterVersion)
class AdapterVersionAdmin(admin.ModelAdmin):
    """Trained adapter versions with their gate reports. Versions are written by training jobs
    only; what an admin may do is serve one, including one the gate rejected."""

    list_display = ("adapter_label", "version", "status", "passed", "owner", "tainted", "created_at", "promoted_at")
    list_filter = ("status", ("tainted_at", admin.EmptyFieldListFilter))
    search_fields = ("owner__email", "adapter__name", "dataset_hash", "checksum")
    list_select_related = ("owner", "adapter", "parent")
    date_hierarchy = "created_at"
    actions = ["approve_over_gate"]
    readonly_fields = (
        "owner",
        "adapter",
        "version",
        "parent",
        "status",
        "fs_dir",
        "checksum",
        "dataset_hash",
        "gate_summary",
        "evaluation_pretty",
        "loss_curve",
        "tainted_at",
        "created_at",
        "promoted_at",
    )
    exclude = ("trained_on", "evaluation")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="Adapter")
    def adapter_label(self, version):
        return f"{version.adapter.name} ({version.owner.email if version.owner_id else 'global'})"

    @admin.display(description="Passed the gate", boolean=True)
    def passed(self, version):
        return bool((version.evaluation or {}).get("passed"))

    @admin.display(description="Forgotten signals", boolean=True, ordering="tainted_at")
    def tainted(self, version):
        return version.tainted_at is not None

    @admin.display(description="Gate report")
    def gate_summary(self, version):
        return format_html('<pre class="pretty-json">{}</pre>', (version.evaluation or {}).get("summary", "–"))

    @admin.display(description="Evaluation")
    def evaluation_pretty(self, version):
        return _pretty(version.evaluation)

    @admin.action(description="Serve this version (overrules the gate where it was rejected)")
    def approve_over_gate(self, request, queryset):
        for version in queryset.select_related("adapter"):
            try:
                adapters.version_approve(actor=request.user, version=version)
            except DomainError as exc:
                self.message_user(request, f"{version}: {exc.message}", messages.ERROR)
            else:
                self.message_user(
                    request, f"{version.adapter.name} v{version.version} is now served.", messages.SUCCESS
                )


@admin.register(TrainingJob)
class TrainingJobAdmin(admin.ModelAdmin):
    """Training jobs as the train worker left them (Flower shows the Celery side of each)."""

    list_display = ("id", "owner", "status", "trigger", "examples", "steps", "attempts", "created_at", "finished_at")
    list_filter = ("status", "trigger")
    search_fields = ("owner__email", "id", "dataset_hash")
    list_select_related = ("owner", "version")
    date_hierarchy = "created_at"
    exclude = ("report",)
    readonly_fields = (
        "owner",
        "adapter",
        "status",
        "trigger",
        "dataset_hash",
        "examples",
        "steps_done",
        "steps_total",
        "loss_curve",
        "report_pretty",
        "error",
        "attempts",
        "heartbeat_at",
        "version",
        "created_at",
        "started_at",
        "finished_at",
    )

    def has_add_permission(self, request):
        return False  # jobs come from triggers and Train now

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="Steps")
    def steps(self, job):
        return f"{job.steps_done} / {job.steps_total}" if job.steps_total else "–"

    @admin.display(description="Report")
    def report_pretty(self, job):
        return _pretty(job.report)
