from django.urls import path

from apps.conversations import api, api_async, feedback_api, training_api

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
    path("preferences", feedback_api.PreferenceListApi.as_view(), name="api-preferences"),
    path("preferences/routing_feedback", feedback_api.RoutingFeedbackApi.as_view(), name="api-routing-feedback"),
    path("preferences/pick", feedback_api.PreferencePickApi.as_view(), name="api-preference-pick"),
    path("preferences/insights", feedback_api.PreferenceInsightsApi.as_view(), name="api-preference-insights"),
    path("preferences/<uuid:event_id>", feedback_api.PreferenceDetailApi.as_view(), name="api-preference"),
    path("memory", feedback_api.MemoryListApi.as_view(), name="api-memory"),
    path("memory/<uuid:item_id>", feedback_api.MemoryDetailApi.as_view(), name="api-memory-item"),
    path("adapters", training_api.AdapterListApi.as_view(), name="api-adapters"),
    path("adapters/<uuid:adapter_id>", training_api.AdapterDetailApi.as_view(), name="api-adapter"),
    path("adapters/<uuid:adapter_id>/rollback", training_api.AdapterRollbackApi.as_view(), name="api-adapter-rollback"),
    path("training/jobs", training_api.TrainingJobListApi.as_view(), name="api-training-jobs"),
]
