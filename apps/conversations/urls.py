from django.urls import path

from apps.conversations import views

urlpatterns = [
    path("", views.chat_home, name="chat-home"),
    path("c/search/", views.conversation_search, name="conversation-search"),
    path("c/contexts/", views.conversation_contexts, name="conversation-contexts"),
    path("c/<uuid:conversation_id>/", views.conversation_page, name="conversation"),
    path("c/<uuid:conversation_id>/rename/", views.conversation_rename, name="conversation-rename"),
    path("c/<uuid:conversation_id>/delete/", views.conversation_delete, name="conversation-delete"),
    path("m/<uuid:message_id>/", views.message_fragment, name="message"),
    path("m/<uuid:message_id>/select/", views.branch_select, name="message-select"),
    path("m/<uuid:message_id>/thumb/", views.message_thumb, name="message-thumb"),
    path("m/<uuid:message_id>/edit/", views.message_edit_form, name="message-edit"),
]
