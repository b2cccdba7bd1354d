import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone


class Artifact(models.Model):
    """A named piece of behaviour kept as data: a workflow, a policy, a tool, an adapter.

    Its body lives in immutable versions; `current_version` says which one is in force.
    An artifact without an owner is global: readable by everyone, writable by admins only.
    """

    class Visibility(models.TextChoices):
        PRIVATE = "private", "Private (the owner only)"
        SHARED = "shared", "Shared (everyone in the owner's tenant may read)"
        GLOBAL = "global", "Global (everyone may read; admins write)"

    class Kind(models.TextChoices):
        WORKFLOW_CHAT = "workflow.chat", "Chat workflow"
        POLICY_ROUTING = "policy.routing", "Routing policy"
        TOOL_SPEC = "tool.spec", "Tool"
        ADAPTER_LORA = "adapter.lora", "LoRA adapter"
        POLICY_TRAINING = "policy.training", "Training policy"
        POLICY_ARCHITECT = "policy.architect", "Architect policy"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="artifacts"
    )
    # The family ("workflow", "policy", "tool", "adapter"), as the seed system's clients filter by it.
    type = models.CharField(max_length=32, db_index=True)
    kind = models.CharField(max_length=32, choices=Kind.choices)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    visibility = models.CharField(max_length=16, choices=Visibility.choices, default=Visibility.PRIVATE)
    current_version = models.ForeignKey(
        "ArtifactVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["kind", "name"]
        constraints = [
            models.UniqueConstraint(fields=["owner", "kind", "name"], name="artifact_owner_kind_name_unique"),
            models.UniqueConstraint(
                fields=["kind", "name"], condition=Q(owner__isnull=True), name="artifact_global_kind_name_unique"
            ),
            models.CheckConstraint(
                condition=Q(owner__isnull=True, visibility="global") | Q(owner__isnull=False) & ~Q(visibility="global"),
                name="artifact_global_iff_ownerless",
            ),
        ]
        indexes = [models.Index(fields=["owner", "kind"])]

    def __str__(self):
        return f"{self.kind} {self.name}"

    @property
    def is_global(self) -> bool:
        return self.owner_id is None

    @property
    def body(self) -> dict:
        return self.current_version.body if self.current_version_id else {}

    @property
    def version_number(self) -> int:
        return self.current_version.version if self.current_version_id else 0


class ArtifactVersion(models.Model):
    """One immutable body of an artifact. A change is a new version whose parent is the old one."""

    class CreatedBy(models.TextChoices):
        SYSTEM = "system", "System"
        USER = "user", "User"
        LLM = "llm", "Model"

    artifact = models.ForeignKey(Artifact, on_delete=models.CASCADE, related_name="versions")
    version = models.PositiveIntegerField()
    body = models.JSONField()
    created_by = models.CharField(max_length=16, choices=CreatedBy.choices, default=CreatedBy.USER)
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    change_note = models.TextField(blank=True)
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["artifact", "version"]
        constraints = [models.UniqueConstraint(fields=["artifact", "version"], name="artifact_version_unique")]

    def __str__(self):
        return f"{self.artifact} v{self.version}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise ValueError("Artifact versions are immutable; write a new version instead.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ValueError("Artifact versions are immutable; they go only with their artifact.")
