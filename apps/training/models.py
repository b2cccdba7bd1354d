import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone
from pgvector.django import HnswIndex, VectorField

EMBEDDING_DIM = 384  # all-MiniLM-L6-v2, the knowledge encoder


class PreferenceEvent(models.Model):
    """A user's judgement of one answer, kept with the receipt of the answer it judges."""

    class Kind(models.TextChoices):
        THUMBS_UP = "thumbs_up", "Thumbs up"
        THUMBS_DOWN = "thumbs_down", "Thumbs down"
        CORRECTION = "correction", "Correction"
        PICK = "pick", "Regenerate-and-pick"
        FEEDBACK = "feedback", "Feedback"
        ROUTING = "routing", "Routing feedback"

    class Feedback(models.TextChoices):
        POSITIVE = "positive", "Positive"
        NEGATIVE = "negative", "Negative"
        NEUTRAL = "neutral", "Neutral"
        LIKE = "like", "Like"
        DISLIKE = "dislike", "Dislike"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="preference_events")
    message = models.ForeignKey(
        "conversations.Message", null=True, on_delete=models.SET_NULL, related_name="preference_events"
    )
    conversation = models.ForeignKey(
        "conversations.Conversation", null=True, on_delete=models.SET_NULL, related_name="preference_events"
    )
    kind = models.CharField(max_length=16, choices=Kind.choices)
    feedback = models.CharField(max_length=16, choices=Feedback.choices, blank=True)
    explicit_signal = models.CharField(max_length=32, blank=True)
    score = models.FloatField(null=True, blank=True, help_text="From -1 (bad) to 1 (good).")
    weight = models.FloatField(null=True, blank=True, help_text="How much this signal counts in training, 0 to 1.")
    reasons = models.JSONField(default=list, blank=True, help_text="wrong, unhelpful, unsafe, other")
    notes = models.TextField(blank=True)
    prompt = models.TextField(help_text="The user message the judged answer replied to.")
    answer = models.TextField(help_text="The judged answer as it was when judged.")
    correction = models.TextField(blank=True)
    context_text = models.TextField(blank=True)
    # For a regenerate-and-pick pair: the answer not chosen.
    rejected_message = models.ForeignKey(
        "conversations.Message", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    rejected_answer = models.TextField(blank=True)
    receipt = models.JSONField(default=dict, blank=True)
    routing_trace = models.JSONField(default=list, blank=True)
    adapter_gates = models.JSONField(default=list, blank=True)
    prompt_embedding = VectorField(dimensions=EMBEDDING_DIM, null=True, blank=True)
    # Clustering (the skills work) fills this in.
    cluster_id = models.CharField(max_length=64, blank=True)
    # A newer correction of (nearly) the same prompt replaces this one in correction memory.
    superseded_by = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # Forgotten: no dataset built after this may contain the event.
    excluded_at = models.DateTimeField(null=True, blank=True)
    # Evaluation traffic is never training data.
    is_evaluation = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["owner", "kind", "-created_at"]),
            HnswIndex(
                name="preference_prompt_hnsw",
                fields=["prompt_embedding"],
                m=16,
                ef_construction=64,
                opclasses=["vector_cosine_ops"],
            ),
        ]

    def __str__(self):
        return f"{self.kind} on {self.message_id}"

    @property
    def is_training_data(self) -> bool:
        return self.excluded_at is None and not self.is_evaluation


class MemoryItem(models.Model):
    """Something the user asked Liminal to remember, recalled in later conversations."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memory_items")
    text = models.TextField()
    embedding = VectorField(dimensions=EMBEDDING_DIM)
    source_message = models.ForeignKey(
        "conversations.Message", null=True, blank=True, on_delete=models.SET_NULL, related_name="memory_items"
    )
    pinned = models.BooleanField(default=False, help_text="Pinned items are recalled however old they are.")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-pinned", "-created_at"]
        indexes = [
            models.Index(fields=["owner", "-created_at"]),
            HnswIndex(
                name="memory_item_embedding_hnsw",
                fields=["embedding"],
                m=16,
                ef_construction=64,
                opclasses=["vector_cosine_ops"],
            ),
        ]
        constraints = [models.CheckConstraint(condition=~Q(text=""), name="memory_item_text_not_empty")]

    def __str__(self):
        return self.text[:60]


class AdapterVersion(models.Model):
    """One trained version of an `adapter.lora` artifact: its files, lineage, gate report, and
    the events it was trained on (so forgetting an event can flag it)."""

    class Status(models.TextChoices):
        CANDIDATE = "candidate", "Candidate"
        PROMOTED = "promoted", "Promoted"
        REJECTED = "rejected", "Rejected"
        ROLLED_BACK = "rolled_back", "Rolled back"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # None for a global skill adapter's versions (the router's skills), else the adapter's owner.
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="adapter_versions"
    )
    adapter = models.ForeignKey("artifacts.Artifact", on_delete=models.CASCADE, related_name="adapter_versions")
    version = models.PositiveIntegerField()
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.CANDIDATE)
    fs_dir = models.CharField(max_length=1000)
    checksum = models.CharField(max_length=64, blank=True)
    dataset_hash = models.CharField(max_length=64, blank=True)
    trained_on = models.ManyToManyField(PreferenceEvent, blank=True, related_name="adapter_versions")
    evaluation = models.JSONField(default=dict, blank=True)
    loss_curve = models.JSONField(default=list, blank=True)
    # Set when an event it was trained on is forgotten: retrain from the last clean version.
    tainted_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    promoted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["adapter", "-version"]
        constraints = [models.UniqueConstraint(fields=["adapter", "version"], name="adapter_version_unique")]

    def __str__(self):
        return f"{self.adapter_id} v{self.version}"


class TrainingJob(models.Model):
    """One training run of an adapter: queued, running (with a heartbeat), then finished."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        PROMOTED = "promoted", "Promoted"
        REJECTED = "rejected", "Rejected by the gate"
        SKIPPED = "skipped", "Nothing new to train on"
        FAILED = "failed", "Failed"

    class Trigger(models.TextChoices):
        MANUAL = "manual", "Train now"
        THRESHOLD = "threshold", "Enough new signals"
        SCHEDULE = "schedule", "Schedule"
        SATISFACTION = "satisfaction", "Satisfaction dropped"

    ACTIVE = (Status.QUEUED, Status.RUNNING)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="training_jobs")
    adapter = models.ForeignKey("artifacts.Artifact", on_delete=models.CASCADE, related_name="training_jobs")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    trigger = models.CharField(max_length=16, choices=Trigger.choices, default=Trigger.MANUAL)
    dataset_hash = models.CharField(max_length=64, blank=True)
    examples = models.PositiveIntegerField(default=0)
    steps_done = models.PositiveIntegerField(default=0)
    steps_total = models.PositiveIntegerField(default=0)
    loss_curve = models.JSONField(default=list, blank=True)
    report = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    # When its task message was last sent. The broker keeps messages in memory between snapshots,
    # so a crash can lose a queued job's message; beat sends it again after a while.
    sent_at = models.DateTimeField(null=True, blank=True)
    version = models.ForeignKey(AdapterVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # One job per adapter at a time.
            models.UniqueConstraint(
                fields=["adapter"], condition=Q(status__in=["queued", "running"]), name="training_job_one_active"
            )
        ]

    def __str__(self):
        return f"job {self.id} ({self.status})"


class SemanticCluster(models.Model):
    """A topic found in users' signals: one user's (owner set) or everyone's (owner None). Its id
    never changes: a cluster absorbed by another is `merged` (pointing at the survivor), and a
    split keeps the id on the larger half."""

    class Status(models.TextChoices):
        FORMING = "forming", "Forming"
        ACTIVE = "active", "Active"
        MERGED = "merged", "Merged"
        RETIRED = "retired", "Retired"

    LIVE = (Status.FORMING, Status.ACTIVE)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="clusters"
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.FORMING)
    centroid = VectorField(dimensions=EMBEDDING_DIM)
    size = models.PositiveIntegerField(default=0)
    positive_count = models.PositiveIntegerField(default=0)
    positive_ratio = models.FloatField(default=0.0)
    cohesion = models.FloatField(default=1.0)
    label = models.CharField(max_length=120, blank=True)
    description = models.TextField(blank=True)
    # The size when the model last labelled it: it is labelled again once the size has doubled.
    labelled_at_size = models.PositiveIntegerField(default=0)
    sample_event_ids = models.JSONField(default=list, blank=True)
    merged_into = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at"]
        indexes = [models.Index(fields=["owner", "status"])]

    def __str__(self):
        return self.label or f"cluster {self.pk}"

    @property
    def is_global(self) -> bool:
        return self.owner_id is None


class ClusterMembership(models.Model):
    """An event in a cluster: each live event sits in one of its owner's clusters and in one
    global cluster."""

    class Scope(models.TextChoices):
        USER = "user", "The user's own"
        GLOBAL = "global", "Everyone's"

    cluster = models.ForeignKey(SemanticCluster, on_delete=models.CASCADE, related_name="memberships")
    event = models.ForeignKey(PreferenceEvent, on_delete=models.CASCADE, related_name="cluster_memberships")
    scope = models.CharField(max_length=8, choices=Scope.choices)
    similarity = models.FloatField(null=True, blank=True, help_text="To the centroid when it joined.")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["event", "scope"], name="cluster_membership_one_per_scope")]

    def __str__(self):
        return f"{self.event_id} in {self.cluster_id}"


class SkillProposal(models.Model):
    """A cluster that is large, cohesive and mostly liked, proposed as a skill adapter of its
    owner's (trained on that cluster's signals only)."""

    class Status(models.TextChoices):
        PENDING = "pending", "Waiting for approval"
        APPROVED = "approved", "Approved: training"
        DISMISSED = "dismissed", "Dismissed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="skill_proposals")
    cluster = models.OneToOneField(SemanticCluster, on_delete=models.CASCADE, related_name="proposal")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    # What the cluster looked like when proposed (size, positive ratio, cohesion, label).
    evidence = models.JSONField(default=dict, blank=True)
    adapter = models.ForeignKey(
        "artifacts.Artifact", null=True, blank=True, on_delete=models.SET_NULL, related_name="skill_proposals"
    )
    job = models.ForeignKey(TrainingJob, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    reason = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"skill proposal for {self.cluster_id} ({self.status})"
