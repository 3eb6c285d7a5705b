from django.conf import settings
from django.contrib.postgres.indexes import GinIndex
from django.contrib.postgres.search import SearchVector, SearchVectorField
from django.db import models
from django.db.models import F, Func, Q
from pgvector.django import VectorField

DOCUMENT_STATUSES = ["pending", "indexing", "ready", "partial", "error", "cancelled"]
CHUNK_STATUSES = ["pending", "processing", "ready", "corrupted", "error"]
FILE_TYPES = ["markdown", "pdf", "epub", "text", "html", "docx", "pptx", "xlsx", "odt", "odp", "ods"]


class Project(models.Model):
    # Unique per owner, not across the deployment: a refusal must not tell a
    # stranger which names others use.
    name = models.CharField(max_length=200)
    # Who created it through the API, the admin or `ingest --owner`; none for
    # projects the platform's own commands created.
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="owned_mirage_projects"
    )
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="mirage_projects")
    # Pinned when the project is created: every chunk of the project is
    # embedded by this model, so its vectors stay comparable. Only the
    # switch of a migration (services.embedders) changes them, together
    # with every chunk's vector.
    embedder = models.CharField(max_length=255)
    embedding_model = models.CharField(max_length=255)
    embedding_dimensions = models.PositiveIntegerField()
    # While the project moves to another embedding model (a migration job,
    # services.embedders): the model its chunks' next vectors are built with.
    # Searches keep using the pinned model above until the switch, which
    # copies every next vector over and clears these fields in one
    # transaction. Empty when no migration is under way.
    next_embedder = models.CharField(max_length=255, blank=True, default="")
    next_embedding_model = models.CharField(max_length=255, blank=True, default="")
    next_embedding_dimensions = models.PositiveIntegerField(null=True, blank=True)
    embedder_job = models.ForeignKey("jobs.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # Optional quotas an operator sets (empty: no limit); an upload past one
    # is refused (services.uploads.QuotaExceeded).
    max_documents = models.PositiveIntegerField(null=True, blank=True)
    max_chunks = models.PositiveIntegerField(null=True, blank=True)
    max_upload_mb_total = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(condition=Q(embedding_dimensions__gt=0), name="project_dimensions_positive"),
            models.UniqueConstraint(
                fields=["owner", "name"], name="project_unique_name_per_owner", nulls_distinct=False
            ),
            models.CheckConstraint(
                condition=Q(next_embedder="") | (~Q(next_embedding_model="") & Q(next_embedding_dimensions__gt=0)),
                name="project_next_embedder_complete",
            ),
        ]

    def __str__(self) -> str:
        return self.name


def document_upload_to(document: "Document", filename: str) -> str:
    return f"projects/{document.project_id}/{document.content_sha256[:2]}/{document.content_sha256}/{filename}"


class Document(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        INDEXING = "indexing", "Indexing"
        READY = "ready", "Ready"
        PARTIAL = "partial", "Partial"
        ERROR = "error", "Error"
        CANCELLED = "cancelled", "Cancelled"

    class FileType(models.TextChoices):
        MARKDOWN = "markdown", "Markdown"
        PDF = "pdf", "PDF"
        EPUB = "epub", "EPUB"
        TEXT = "text", "Plain text"
        HTML = "html", "HTML"
        DOCX = "docx", "Word document"
        PPTX = "pptx", "PowerPoint presentation"
        XLSX = "xlsx", "Excel workbook"
        ODT = "odt", "OpenDocument text"
        ODP = "odp", "OpenDocument presentation"
        ODS = "ods", "OpenDocument spreadsheet"

    ACTIVE_STATUSES = (Status.PENDING, Status.INDEXING)
    FINAL_STATUSES = (Status.READY, Status.PARTIAL, Status.ERROR, Status.CANCELLED)

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="documents")
    filename = models.CharField(max_length=255)
    file = models.FileField(upload_to=document_upload_to, max_length=500)
    file_type = models.CharField(max_length=16, choices=FileType.choices)
    size_bytes = models.BigIntegerField()
    content_sha256 = models.CharField(max_length=64)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    error_message = models.TextField(blank=True, default="")
    metadata = models.JSONField(default=dict, blank=True)
    # Bumped by every new run (index, reindex, retry) and by cancel; tasks
    # carry the value they were started with and write nothing once it moved.
    generation = models.PositiveIntegerField(default=0)
    current_job = models.ForeignKey("jobs.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    parsing_started_at = models.DateTimeField(null=True, blank=True)
    parsing_finished_at = models.DateTimeField(null=True, blank=True)
    embedding_finished_at = models.DateTimeField(null=True, blank=True)
    indexed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["project", "content_sha256"], name="document_unique_content_per_project"),
            models.CheckConstraint(condition=Q(status__in=DOCUMENT_STATUSES), name="document_status_valid"),
            models.CheckConstraint(condition=Q(file_type__in=FILE_TYPES), name="document_file_type_valid"),
        ]
        indexes = [
            models.Index(
                fields=["status", "updated_at"],
                name="document_active_idx",
                condition=Q(status__in=["pending", "indexing"]),
            ),
            models.Index(fields=["project", "status"], name="document_project_status_idx"),
        ]

    def __str__(self) -> str:
        return self.filename


class Chunk(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        PROCESSING = "processing", "Processing"
        READY = "ready", "Ready"
        CORRUPTED = "corrupted", "Corrupted (embedded from truncated input)"
        ERROR = "error", "Error"

    ACTIVE_STATUSES = (Status.PENDING, Status.PROCESSING)
    FINAL_STATUSES = (Status.READY, Status.CORRUPTED, Status.ERROR)

    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="chunks")
    position = models.PositiveIntegerField()
    content = models.TextField()
    content_sha256 = models.CharField(max_length=64)
    token_count = models.PositiveIntegerField(default=0)
    structure = models.JSONField(default=dict, blank=True)
    # [start, end) in the document's extracted text (documents.chunking:
    # sections in reading order, joined by a blank line); null for chunks
    # stored before offsets were kept.
    start_offset = models.PositiveBigIntegerField(null=True, blank=True)
    end_offset = models.PositiveBigIntegerField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    # Untyped on purpose: projects pin models of different dimensions. Each
    # model gets a partial HNSW index on the cast expression (see migrations
    # and documents.vectorindex).
    embedding = VectorField(null=True, blank=True)
    embedding_model = models.CharField(max_length=255, blank=True, default="")
    # The vector of the project's next model while it migrates to it
    # (Project.next_embedding_model); copied over `embedding` at the switch.
    # Never searched: the chunk stays searchable with `embedding` meanwhile.
    next_embedding = VectorField(null=True, blank=True)
    next_embedding_model = models.CharField(max_length=255, blank=True, default="")
    # Incremented by every claim; a worker may only store a result under the
    # attempt number it claimed, so a late or duplicate task cannot write.
    attempts = models.PositiveIntegerField(default=0)
    # When a task for this chunk was last sent; a pending chunk whose task
    # never arrives is sent again once this is older than the lease.
    dispatched_at = models.DateTimeField(null=True, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    # Language-neutral ("simple") so German, Chinese and English text all
    # tokenise the same way for keyword search; text written without spaces
    # (Chinese, Japanese) is added as overlapping character bigrams
    # (mirage_cjk_bigrams, migration 0005), so a word inside a run is found.
    search_vector = models.GeneratedField(
        expression=SearchVector("content", config="simple")
        + SearchVector(
            Func(F("content"), function="mirage_cjk_bigrams", output_field=models.TextField()), config="simple"
        ),
        output_field=SearchVectorField(),
        db_persist=True,
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["document_id", "position"]
        constraints = [
            models.UniqueConstraint(fields=["document", "position"], name="chunk_unique_position"),
            models.CheckConstraint(condition=Q(status__in=CHUNK_STATUSES), name="chunk_status_valid"),
            models.CheckConstraint(
                condition=~Q(status__in=["ready", "corrupted"]) | Q(embedding__isnull=False),
                name="chunk_embedded_has_vector",
            ),
        ]
        indexes = [
            models.Index(
                fields=["status", "lease_expires_at"],
                name="chunk_active_idx",
                condition=Q(status__in=["pending", "processing"]),
            ),
            models.Index(fields=["document", "status"], name="chunk_document_status_idx"),
            # A document's chunks that wait for their task (windowed dispatch):
            # the next one is the first entry, whatever the document's size.
            models.Index(
                fields=["document", "position"],
                name="chunk_waiting_idx",
                condition=Q(status="pending", dispatched_at__isnull=True),
            ),
            GinIndex(fields=["search_vector"], name="chunk_search_vector_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.document_id}#{self.position}"


class EmbeddingCacheEntry(models.Model):
    """Vectors by (model, exact input text): a reindex of unchanged text, or
    two documents sharing text, costs no provider call."""

    model_id = models.CharField(max_length=255)
    text_sha256 = models.CharField(max_length=64)
    embedding = VectorField()
    truncated = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["model_id", "text_sha256"], name="embedding_cache_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.model_id}:{self.text_sha256[:12]}"


# Registered with the app from here, where Django looks for its models.
from documents.webhooks.models import Webhook, WebhookAttempt, WebhookDelivery  # noqa: E402,F401
