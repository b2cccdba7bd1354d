from django.urls import path

from apps.accounts.consumers import UserEventsConsumer
from apps.conversations.consumers import ApiChatConsumer, ChatConsumer

websocket_urlpatterns = [
    path("ws/events/", UserEventsConsumer.as_asgi()),
    path("ws/chat/", ChatConsumer.as_asgi()),
    path("v1/chat/stream", ApiChatConsumer.as_asgi()),
]
