"""What the router keeps per adapter: where its training data sits in embedding space (a running
mean of the embeddings it was trained on) and how it has fared since."""

from django.db import models
from django.utils import timezone
from pgvector.django import VectorField

from apps.training.models import EMBEDDING_DIM


class AdapterRouterState(models.Model):
    adapter = models.OneToOneField("artifacts.Artifact", on_delete=models.CASCADE, related_name="router_state")
    centroid = VectorField(dimensions=EMBEDDING_DIM, null=True, blank=True)
    # How many embeddings the centroid is the mean of: the next one moves it by 1/(n+1).
    centroid_count = models.PositiveIntegerField(default=0)
    # Answers it took part in, and the mean judgement (-1 to 1) of those that were judged.
    usage_count = models.PositiveIntegerField(default=0)
    success_score = models.FloatField(default=0.0)
    judged_count = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField(default=timezone.now)

    def __str__(self):
        return f"router state of {self.adapter_id}"
