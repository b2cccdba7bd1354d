"""Files, contexts, chunks and knowledge gaps.

Every row is owned by a user, and chunks carry their owner too, so retrieval can be scoped in
SQL without joining through files. Vectors are stored with the encoder that made them
(`encoder_id`, `embedding_dim`): a model change shows up as chunks whose encoder is not the
current one, and re-ingesting the file replaces them.
"""

import uuid
from datetime import timedelta

from django.conf import settings
from django.contrib.postgres.indexes import GinIndex
from django.contrib.postgres.search import SearchVector, SearchVectorField
from django.db import models
from django.db.models.functions import Lower
from django.utils import timezone
from pgvector.django import HnswIndex, VectorField

EMBEDDING_DIM = 384
# The text-search configuration of the generated `search_vector` column and of every query
# against it; changing it needs a migration that rebuilds the column.
TEXT_SEARCH_CONFIG = "english"


class KnowledgeFile(models.Model):
    class Kind(models.TextChoices):
        TEXT = "text", "Plain text"
        MARKDOWN = "markdown", "Markdown"
        HTML = "html", "HTML"
        PDF = "pdf", "PDF"
        CSV = "csv", "CSV"
        JSON = "json", "JSON"

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        PROCESSING = "processing", "Processing"
        READY = "ready", "Ready"
        FAILED = "failed", "Failed"

    class Phase(models.TextChoices):
        WAITING = "waiting", "Waiting for a worker"
        EXTRACTING = "extracting", "Extracting text"
        EMBEDDING = "embedding", "Embedding chunks"
        DONE = "done", "Done"

    PENDING = (Status.QUEUED, Status.PROCESSING)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="knowledge_files")
    name = models.CharField(max_length=255, help_text="Sanitised file name; also its name on disk.")
    folder = models.CharField(
        max_length=255, blank=True, default="", help_text="Virtual folder, e.g. 'research/papers'; '' is the top level."
    )
    storage_path = models.CharField(max_length=600, help_text="Path relative to SHARED_FS_ROOT.")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    content_type = models.CharField(max_length=100, blank=True)
    size_bytes = models.BigIntegerField()
    sha256 = models.CharField(max_length=64)

    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    phase = models.CharField(max_length=16, choices=Phase.choices, default=Phase.WAITING)
    chunks_total = models.PositiveIntegerField(default=0)
    chunks_done = models.PositiveIntegerField(default=0)
    error_code = models.CharField(max_length=64, blank=True)
    error_message = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0)
    title = models.CharField(max_length=500, blank=True, help_text="Title found inside the document, if any.")
    page_count = models.PositiveIntegerField(null=True, blank=True)
    encoder_id = models.CharField(max_length=100, blank=True, help_text="Encoder of the stored chunks.")
    chunking_version = models.PositiveIntegerField(null=True, blank=True)

    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)
    ingest_started_at = models.DateTimeField(null=True, blank=True)
    ingested_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint("owner", Lower("name"), name="knowledge_file_owner_name_unique"),
            models.UniqueConstraint(fields=["owner", "sha256"], name="knowledge_file_owner_sha256_unique"),
        ]
        indexes = [models.Index(fields=["owner", "folder"])]

    def __str__(self):
        return self.name

    @property
    def progress_percent(self) -> int:
        if self.status == self.Status.READY:
            return 100
        if not self.chunks_total:
            return 0
        return min(100, round(100 * self.chunks_done / self.chunks_total))

    @staticmethod
    def stall_cutoff(now=None):
        """A pending file last changed before this is stalled."""
        return (now or timezone.now()) - timedelta(seconds=settings.KNOWLEDGE_STALLED_AFTER_SECONDS)

    @property
    def is_pending(self) -> bool:
        return self.status in self.PENDING

    @property
    def is_stalled(self) -> bool:
        """Processing without progress for longer than a batch can take (its worker died), or
        queued that long (the broker may have lost its message: a Valkey crash keeps only the
        last snapshot). Either way a re-ingest sends it again (beat's files_reap_stalled does)."""
        return self.is_pending and self.updated_at < self.stall_cutoff()


class Context(models.Model):
    """A named collection of files and folders (`context.knowledge`) that conversations bind to."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="knowledge_contexts")
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    files = models.ManyToManyField(KnowledgeFile, through="ContextFile", related_name="contexts", blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint("owner", Lower("name"), name="knowledge_context_owner_name_unique")]

    def __str__(self):
        return self.name


class ContextFile(models.Model):
    context = models.ForeignKey(Context, on_delete=models.CASCADE, related_name="file_links")
    file = models.ForeignKey(KnowledgeFile, on_delete=models.CASCADE, related_name="context_links")
    added_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["context", "file"], name="knowledge_contextfile_unique")]

    def __str__(self):
        return f"{self.file_id} in {self.context_id}"


class ContextFolder(models.Model):
    """A folder in a context: every file in it or below it, including files uploaded later."""

    context = models.ForeignKey(Context, on_delete=models.CASCADE, related_name="folders")
    path = models.CharField(max_length=255)
    added_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["path"]
        constraints = [models.UniqueConstraint(fields=["context", "path"], name="knowledge_contextfolder_unique")]

    def __str__(self):
        return f"{self.path or '/'} in {self.context_id}"


class Chunk(models.Model):
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    file = models.ForeignKey(KnowledgeFile, on_delete=models.CASCADE, related_name="chunks")
    ordinal = models.PositiveIntegerField()
    text = models.TextField()
    heading = models.CharField(max_length=1000, blank=True, help_text="Enclosing headings, outermost first.")
    token_count = models.PositiveIntegerField()
    char_start = models.PositiveIntegerField()
    char_end = models.PositiveIntegerField()
    page_start = models.PositiveIntegerField(null=True, blank=True)
    page_end = models.PositiveIntegerField(null=True, blank=True)
    line_start = models.PositiveIntegerField(null=True, blank=True)
    line_end = models.PositiveIntegerField(null=True, blank=True)
    location = models.CharField(max_length=1100, blank=True, help_text="Human-readable position for citations.")
    content_sha256 = models.CharField(max_length=64)
    embedding = VectorField(dimensions=EMBEDDING_DIM)
    encoder_id = models.CharField(max_length=100)
    embedding_dim = models.PositiveSmallIntegerField()
    search_vector = models.GeneratedField(
        expression=SearchVector("heading", weight="A", config=TEXT_SEARCH_CONFIG)
        + SearchVector("text", weight="B", config=TEXT_SEARCH_CONFIG),
        output_field=SearchVectorField(),
        db_persist=True,
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["file", "ordinal"]
        constraints = [models.UniqueConstraint(fields=["file", "ordinal"], name="knowledge_chunk_file_ordinal_unique")]
        indexes = [
            HnswIndex(
                name="knowledge_chunk_embedding_hnsw",
                fields=["embedding"],
                m=16,
                ef_construction=64,
                opclasses=["vector_cosine_ops"],
            ),
            GinIndex(fields=["search_vector"], name="knowledge_chunk_search_gin"),
            models.Index(fields=["owner", "file"], name="knowledge_chunk_owner_file"),
        ]

    def __str__(self):
        return f"{self.file_id}#{self.ordinal}"


class RetrievalConfig(models.Model):
    """Retrieval tuning, editable in the admin; one row (pk=1), seeded by a migration."""

    rrf_k = models.PositiveIntegerField(default=60, help_text="Reciprocal rank fusion constant.")
    candidates = models.PositiveIntegerField(
        default=40, help_text="How many rows each of the vector and full-text searches contributes before fusion."
    )
    ef_search = models.PositiveIntegerField(
        default=100, help_text="pgvector hnsw.ef_search: candidate list size of the HNSW scan (≥ candidates)."
    )
    min_similarity = models.FloatField(
        default=0.3,
        help_text="Cosine similarity below which a chunk is not relevant; when no chunk reaches it, "
        "the answer says so and a knowledge gap is recorded.",
    )
    fulltext_min_similarity = models.FloatField(
        default=0.15,
        help_text="A chunk that also matches the query's words in full text is relevant from this lower "
        "cosine similarity on (exact names, codes and rare words embed poorly).",
    )
    fulltext_max_term_frequency = models.FloatField(
        default=0.01,
        help_text="Query words found in a larger share of all chunks (per PostgreSQL's statistics) are too "
        "common to select candidates for the full-text search.",
    )
    fulltext_max_matches = models.PositiveIntegerField(
        default=4000,
        help_text="At most this many full-text matches are ranked per query (bounds latency on large libraries).",
    )
    default_k = models.PositiveIntegerField(
        default=5, help_text="Chunks put into a prompt when the caller does not say."
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "retrieval configuration"
        verbose_name_plural = "retrieval configuration"

    def __str__(self):
        return "Retrieval configuration"

    @classmethod
    def current(cls) -> "RetrievalConfig":
        config, _ = cls.objects.get_or_create(pk=1)
        return config


class KnowledgeGap(models.Model):
    """A question the user's files could not answer, kept so the user can fill the gap later."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="knowledge_gaps")
    query = models.TextField()
    contexts = models.ManyToManyField(Context, related_name="gaps", blank=True)
    conversation_id = models.UUIDField(null=True, blank=True, db_index=True)
    best_score = models.FloatField(null=True, blank=True, help_text="Best cosine similarity found, if any.")
    created_at = models.DateTimeField(default=timezone.now)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["owner", "resolved_at"])]

    def __str__(self):
        return self.query[:80]
