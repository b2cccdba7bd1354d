import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone


class PreferenceEvent(models.Model):
    """A user's judgement of one answer, kept with the receipt of the answer it judges."""

    class Kind(models.TextChoices):
        THUMBS_UP = "thumbs_up", "Thumbs up"
        THUMBS_DOWN = "thumbs_down", "Thumbs down"
        CORRECTION = "correction", "Correction"
        PICK = "pick", "Regenerate-and-pick"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="preference_events")
    message = models.ForeignKey(
        "conversations.Message", null=True, on_delete=models.SET_NULL, related_name="preference_events"
    )
    conversation = models.ForeignKey(
        "conversations.Conversation", null=True, on_delete=models.SET_NULL, related_name="preference_events"
    )
    kind = models.CharField(max_length=16, choices=Kind.choices)
    prompt = models.TextField(help_text="The user message the judged answer replied to.")
    answer = models.TextField(help_text="The judged answer as it was when judged.")
    correction = models.TextField(blank=True)
    receipt = models.JSONField(default=dict, blank=True)
    # Evaluation traffic is never training data.
    is_evaluation = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["owner", "kind", "-created_at"])]

    def __str__(self):
        return f"{self.kind} on {self.message_id}"
