from django.urls import path

from apps.conversations import api, api_async

urlpatterns = [
    path("chat", api_async.chat, name="api-chat"),
    path("chat/cancel", api.ChatCancelApi.as_view(), name="api-chat-cancel"),
    path("conversations", api.ConversationListApi.as_view(), name="api-conversations"),
    path("conversations/<uuid:conversation_id>", api.ConversationDetailApi.as_view(), name="api-conversation"),
    path(
        "conversations/<uuid:conversation_id>/messages",
        api.ConversationMessagesApi.as_view(),
        name="api-conversation-messages",
    ),
    path("tools/<uuid:tool_id>/invoke", api.ToolInvokeApi.as_view(), name="api-tool-invoke"),
    path("models", api_async.models, name="api-models"),
    path("chat/completions", api_async.chat_completions, name="api-chat-completions"),
]
