"""Conversations and their messages in the admin: read-only (they are the users' words and the
model's answers, written only through the chat services); a conversation's page shows its whole
message tree, branches included. Deleting goes through the service, which also stops a
generation still running."""

import json

from django.contrib import admin
from django.db.models import Count
from django.template.defaultfilters import truncatechars
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from apps.conversations import services
from apps.conversations.models import Conversation, Message

TREE_EXCERPT_CHARS = 160


def _pretty(value) -> str:
    text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)
    return format_html('<pre class="pretty-json" style="white-space: pre-wrap; margin: 0">{}</pre>', text)


def _message_link(message_id, label) -> str:
    return format_html('<a href="{}">{}</a>', reverse("admin:conversations_message_change", args=[message_id]), label)


class _MessageTree:
    """The message tree of one conversation as nested HTML lists. A run of single replies stays
    in one list (a long chat reads top to bottom); only a message with several children (an edit
    or a regeneration) opens one nested list per branch."""

    def __init__(self, conversation: Conversation):
        messages = list(
            conversation.messages.order_by("created_at").only(
                "id", "parent_id", "role", "status", "content", "error", "created_at"
            )
        )
        self.by_id = {message.pk: message for message in messages}
        self.children: dict = {}
        for message in messages:
            self.children.setdefault(message.parent_id, []).append(message)
        self.current_path = set()
        node = self.by_id.get(conversation.current_leaf_id)
        while node is not None:
            self.current_path.add(node.pk)
            node = self.by_id.get(node.parent_id)

    def render(self) -> str:
        roots = self.children.get(None, [])
        if not roots:
            return format_html('<p class="help">{}</p>', "No messages.")
        return self._branches(roots)

    def _branches(self, siblings) -> str:
        if len(siblings) == 1:
            return self._thread(siblings[0])
        items = format_html_join(
            "",
            '<li style="list-style: none; margin: .4rem 0 .4rem 0; padding-left: .8rem; '
            'border-left: 2px solid var(--hairline-color, #ccc)">'
            '<div class="help" style="margin: 0 0 .2rem">Branch {} of {}</div>{}</li>',
            ((n, len(siblings), self._thread(message)) for n, message in enumerate(siblings, start=1)),
        )
        return format_html('<ul class="message-branches" style="margin: 0; padding: 0">{}</ul>', items)

    def _thread(self, message) -> str:
        items = []
        while True:
            items.append(self._item(message))
            replies = self.children.get(message.pk, [])
            if len(replies) != 1:
                break
            message = replies[0]
        if len(replies) > 1:
            items.append(format_html('<li style="list-style: none">{}</li>', self._branches(replies)))
        thread = mark_safe("".join(items))  # each item was built by format_html
        return format_html('<ol class="message-thread" style="margin: 0; padding: 0">{}</ol>', thread)

    def _item(self, message) -> str:
        on_path = message.pk in self.current_path
        text = truncatechars(message.content, TREE_EXCERPT_CHARS) or (message.error and f"[{message.error}]") or "–"
        return format_html(
            '<li class="message{}" id="tree-{}" style="list-style: none; margin: .25rem 0">'
            "<strong>{}</strong> {} "
            '<span class="help">{} · {}{}</span>'
            '<div style="white-space: pre-wrap; margin: .1rem 0 0 0">{}</div></li>',
            " on-current-branch" if on_path else "",
            message.pk,
            message.get_role_display(),
            _message_link(message.pk, "open"),
            message.get_status_display(),
            timezone.localtime(message.created_at).strftime("%Y-%m-%d %H:%M:%S"),
            " · shown branch" if on_path else "",
            text,
        )


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ("__str__", "owner", "origin", "message_count", "created_at", "updated_at")
    list_filter = ("origin", "title_is_generated", "updated_at")
    search_fields = ("title", "owner__email", "owner__handle")
    list_select_related = ("owner",)
    date_hierarchy = "updated_at"
    fieldsets = (
        (None, {"fields": ("id", "title", "title_is_generated", "owner", "origin", "created_at", "updated_at")}),
        ("Answering", {"fields": ("workflow", "contexts", "system_prompt")}),
        ("Messages", {"fields": ("message_tree",)}),
        ("Summary of older turns", {"classes": ("collapse",), "fields": ("summary", "summary_through")}),
    )
    readonly_fields = ("message_tree",)

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(message_total=Count("messages"))

    def has_add_permission(self, request):
        return False  # conversations start in the chat

    def has_change_permission(self, request, obj=None):
        return False  # the users' own words: viewed here, changed only through the chat

    def get_deleted_objects(self, objs, request):
        # Its messages go with it, though no single message may be deleted on its own.
        deleted, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
        return deleted, counts, perms_needed - {Message._meta.verbose_name}, protected

    def delete_model(self, request, obj):
        services.conversation_delete(actor=obj.owner, conversation=obj)

    def delete_queryset(self, request, queryset):
        for conversation in queryset.select_related("owner"):
            services.conversation_delete(actor=conversation.owner, conversation=conversation)

    @admin.display(description="Messages", ordering="message_total")
    def message_count(self, conversation):
        return conversation.message_total

    @admin.display(description="Message tree")
    def message_tree(self, conversation):
        return _MessageTree(conversation).render()


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ("excerpt", "role", "status", "conversation_link", "owner", "created_at")
    list_filter = ("role", "status", "conversation__origin", "created_at")
    search_fields = ("content", "request_id", "owner__email", "conversation__title")
    list_select_related = ("owner", "conversation")
    date_hierarchy = "created_at"
    fieldsets = (
        (None, {"fields": ("id", "conversation", "owner", "parent", "role", "status", "created_at", "finished_at")}),
        ("Content", {"fields": ("content", "error")}),
        (
            "Generation",
            {"fields": ("request_id", "workflow_version", "generation_params_pretty", "receipt_pretty")},
        ),
    )
    readonly_fields = ("generation_params_pretty", "receipt_pretty")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False  # removing one message would cut its branch out of the tree: delete the conversation

    @admin.display(description="Content")
    def excerpt(self, message):
        return truncatechars(message.content, 80) or "–"

    @admin.display(description="Conversation", ordering="conversation__updated_at")
    def conversation_link(self, message):
        url = reverse("admin:conversations_conversation_change", args=[message.conversation_id])
        return format_html('<a href="{}#tree-{}">{}</a>', url, message.pk, truncatechars(str(message.conversation), 50))

    @admin.display(description="Generation parameters")
    def generation_params_pretty(self, message):
        return _pretty(message.generation_params)

    @admin.display(description="Receipt")
    def receipt_pretty(self, message):
        return _pretty(message.receipt)
