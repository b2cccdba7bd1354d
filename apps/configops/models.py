import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone


class ConfigPatch(models.Model):
    """A proposed change to an artifact as RFC 6902 operations against one of its versions.

    It is proposed (by the model, an admin, or a user), dry-run at once, decided by an admin,
    then applied as a new artifact version; rollback restores an earlier version. Nothing here is
    ever deleted: the rows are the audit history of the artifact's configuration."""

    class Proposer(models.TextChoices):
        SYSTEM_LLM = "system_llm", "The model (architect)"
        HUMAN_ADMIN = "human_admin", "An admin"
        USER = "user", "A user"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        APPROVED = "approved", "Approved"
        REJECTED = "rejected", "Rejected"
        APPLIED = "applied", "Applied"
        FAILED = "failed", "Failed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    artifact = models.ForeignKey("artifacts.Artifact", on_delete=models.CASCADE, related_name="config_patches")
    # The artifact's version number the operations were written against; applying needs it current.
    base_version = models.PositiveIntegerField()
    proposer = models.CharField(max_length=16, choices=Proposer.choices)
    proposed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    ops = models.JSONField(default=list)
    justification = models.TextField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    dry_run = models.JSONField(default=dict, blank=True)
    failure_reason = models.TextField(blank=True)
    # What the architect wrote, kept as it was when it did not parse or validate.
    model_output = models.TextField(blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    decision_reason = models.TextField(blank=True)
    applied_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    applied_at = models.DateTimeField(null=True, blank=True)
    applied_version = models.ForeignKey(
        "artifacts.ArtifactVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    rolled_back_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    rolled_back_at = models.DateTimeField(null=True, blank=True)
    rollback_version = models.ForeignKey(
        "artifacts.ArtifactVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "created_at"]), models.Index(fields=["artifact", "created_at"])]

    def __str__(self):
        return f"patch {str(self.id)[:8]} of {self.artifact} v{self.base_version} ({self.status})"


class ArchitectRequest(models.Model):
    """An admin's request for the architect's proposal on one artifact, with the goal they wrote.

    The goal is free text: it waits here for the worker, and only this row's id travels as the
    task argument (task messages are visible in Flower and the broker, and outlive the request).
    Kept afterwards beside the proposal it led to, as the reason it was asked for."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    artifact = models.ForeignKey("artifacts.Artifact", on_delete=models.CASCADE, related_name="architect_requests")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    goal = models.TextField(blank=True)
    # The proposal (pending, or failed with the reason) the architect answered with; None until then.
    patch = models.ForeignKey(ConfigPatch, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"architect request {str(self.id)[:8]} for {self.artifact}"
