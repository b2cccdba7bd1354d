from django.urls import path

from apps.conversations import adapter_views, feedback_views, views

urlpatterns = [
    path("", views.chat_home, name="chat-home"),
    path("c/search/", views.conversation_search, name="conversation-search"),
    path("c/contexts/", views.conversation_contexts, name="conversation-contexts"),
    path("c/attach/", views.conversation_attach, name="conversation-attach"),
    path("c/<uuid:conversation_id>/", views.conversation_page, name="conversation"),
    path("c/<uuid:conversation_id>/rename/", views.conversation_rename, name="conversation-rename"),
    path("c/<uuid:conversation_id>/delete/", views.conversation_delete, name="conversation-delete"),
    path("m/<uuid:message_id>/", views.message_fragment, name="message"),
    path("m/<uuid:message_id>/select/", views.branch_select, name="message-select"),
    path("m/<uuid:message_id>/thumb/", views.message_thumb, name="message-thumb"),
    path("m/<uuid:message_id>/edit/", views.message_edit_form, name="message-edit"),
    path("m/<uuid:message_id>/feedback/", feedback_views.message_feedback, name="message-feedback"),
    path("m/<uuid:message_id>/keep/", feedback_views.message_keep, name="message-keep"),
    path("feedback/", feedback_views.feedback_page, name="feedback"),
    path("feedback/<uuid:event_id>/delete/", feedback_views.feedback_delete, name="feedback-delete"),
    path("memory/", feedback_views.memory_page, name="memory"),
    path("memory/add/", feedback_views.memory_add, name="memory-add"),
    path("memory/<uuid:item_id>/", feedback_views.memory_item, name="memory-item"),
    path("memory/<uuid:item_id>/edit/", feedback_views.memory_edit, name="memory-edit"),
    path("memory/<uuid:item_id>/pin/", feedback_views.memory_pin, name="memory-pin"),
    path("memory/<uuid:item_id>/delete/", feedback_views.memory_delete, name="memory-delete"),
    path("adapters/", adapter_views.adapters_page, name="adapters"),
    path("adapters/train/", adapter_views.adapter_train, name="adapter-train"),
    path("adapters/<uuid:adapter_id>/", adapter_views.adapter_page, name="adapter"),
    path("adapters/<uuid:adapter_id>/progress/", adapter_views.adapter_progress, name="adapter-progress"),
    path("adapters/<uuid:adapter_id>/rollback/", adapter_views.adapter_rollback, name="adapter-rollback"),
    path("adapters/versions/<uuid:version_id>/serve/", adapter_views.version_serve, name="adapter-version-serve"),
]
