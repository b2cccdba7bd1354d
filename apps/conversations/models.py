import uuid

from django.conf import settings
from django.contrib.postgres.indexes import GinIndex
from django.contrib.postgres.search import SearchVector
from django.db import models
from django.utils import timezone


class Conversation(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations")
    title = models.CharField(max_length=200, blank=True)
    title_is_generated = models.BooleanField(default=False)
    # The leaf of the branch the user is looking at; the conversation shows the path to it.
    current_leaf = models.ForeignKey("Message", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # Older turns that no longer fit the context window, summarised by the model.
    summary = models.TextField(blank=True)
    summary_through = models.ForeignKey("Message", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # Knowledge the answers are grounded in (NotebookLM-style); the owner's own contexts only.
    contexts = models.ManyToManyField("knowledge.Context", blank=True, related_name="conversations")
    # The workflow.chat artifact that answers here; none means the global default workflow.
    workflow = models.ForeignKey(
        "artifacts.Artifact", null=True, blank=True, on_delete=models.SET_NULL, related_name="conversations"
    )
    # A client's own system message (OpenAI-compatible API); empty means the workflow's.
    system_prompt = models.TextField(blank=True)
    # Conversations made for /v1/chat/completions calls keep their receipts but stay out of the sidebar.
    origin = models.CharField(max_length=16, default="chat", choices=[("chat", "Chat"), ("completions", "API")])
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-updated_at"]
        indexes = [
            models.Index(fields=["owner", "-updated_at"]),
            GinIndex(SearchVector("title", config="english"), name="conv_title_search"),
        ]

    def __str__(self):
        return self.title or f"Conversation {self.id}"


class Message(models.Model):
    class Role(models.TextChoices):
        USER = "user", "User"
        ASSISTANT = "assistant", "Assistant"

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        STREAMING = "streaming", "Streaming"
        COMPLETE = "complete", "Complete"
        CANCELLED = "cancelled", "Cancelled"
        FAILED = "failed", "Failed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="messages")
    # Edits and regenerations are siblings: children of the same parent.
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.CASCADE, related_name="children")
    role = models.CharField(max_length=16, choices=Role.choices)
    content = models.TextField(blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.COMPLETE)
    error = models.TextField(blank=True)
    # The client's label for the answer (unique per user); streams and flags use the message id.
    request_id = models.CharField(max_length=64, blank=True, db_index=True)
    # The workflow version this answer runs on, pinned when the turn starts.
    workflow_version = models.ForeignKey(
        "artifacts.ArtifactVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Sampling the request asked for (the OpenAI-compatible API), over the workflow's defaults.
    generation_params = models.JSONField(default=dict, blank=True)
    # For assistant messages: model, adapters, routing trace, token counts, timings, confidence.
    receipt = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at"]
        indexes = [
            models.Index(fields=["conversation", "parent", "created_at"]),
            models.Index(fields=["status", "created_at"]),
            GinIndex(SearchVector("content", config="english"), name="message_content_search"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["owner", "request_id"], condition=~models.Q(request_id=""), name="message_owner_request_unique"
            )
        ]

    def __str__(self):
        return f"{self.role}: {self.content[:40]}"

    @property
    def stream_key(self) -> str:
        return str(self.pk)

    @property
    def is_pending(self) -> bool:
        return self.status in (self.Status.QUEUED, self.Status.STREAMING)
