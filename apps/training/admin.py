from django.contrib import admin

from apps.training.models import PreferenceEvent


@admin.register(PreferenceEvent)
class PreferenceEventAdmin(admin.ModelAdmin):
    list_display = ("kind", "owner", "message", "is_evaluation", "created_at")
    list_filter = ("kind", "is_evaluation")
    search_fields = ("owner__email", "prompt", "answer")
    readonly_fields = ("owner", "message", "conversation", "receipt", "created_at")
