import json
from typing import Literal

from django.conf import settings
from django.utils import timezone
from rest_framework import serializers

from common.api import StrictSerializer, datetime_text, response_now
from common.pauses import pause_state
from documents import selectors
from documents.models import Chunk, Document, Project
from documents.search import MAX_CONTEXT, MAX_K, MODES, SearchFilters
from jobs.api.serializers import JobSerializer, job_row
from jobs.models import Job

PRIORITY_HELP = "`high` work is admitted, and its chunks embedded, before waiting `normal` work; `low` after it."


def priority_field():
    return serializers.ChoiceField(
        choices=Job.Priority.choices, required=False, default=Job.Priority.NORMAL, help_text=PRIORITY_HELP
    )


# Providers a client may pin a project to. Dotted paths (arbitrary classes)
# stay an operator's choice through MIRAGE_EMBEDDER, never a request's.
API_EMBEDDERS = ["hash", "local", "ollama", "openai"]


class ProjectInputSerializer(StrictSerializer):
    name = serializers.CharField(max_length=200)
    embedder = serializers.ChoiceField(choices=API_EMBEDDERS, required=False)

    def validate_name(self, value: str) -> str:
        value = value.strip()
        if not value:
            raise serializers.ValidationError("This field may not be blank.")
        # Only the caller's own projects are compared: whether someone else
        # uses the name is none of the caller's business.
        owner = self.context["request"].user
        if Project.objects.filter(owner=owner, name=value).exists():
            raise serializers.ValidationError("You already have a project with this name.")
        return value


class EmbedderInputSerializer(StrictSerializer):
    embedder = serializers.ChoiceField(
        choices=API_EMBEDDERS,
        help_text="The embedder to move the project to (configured for the deployment as for a new project).",
    )


class EmbedderMigrationSerializer(serializers.Serializer):
    embedder = serializers.CharField()
    embedding_model = serializers.CharField()
    embedding_dimensions = serializers.IntegerField()
    job = JobSerializer(help_text="The migration job: its progress, and where to cancel it.")


class EmbedderStateSerializer(serializers.Serializer):
    embedder = serializers.CharField(help_text="What every search of the project uses now.")
    embedding_model = serializers.CharField()
    embedding_dimensions = serializers.IntegerField()
    migration = EmbedderMigrationSerializer(
        allow_null=True, help_text="The model the project is moving to, while a migration job runs; null otherwise."
    )


class ProjectSerializer(serializers.ModelSerializer):
    paused = serializers.SerializerMethodField(help_text="The project, or the deployment, is paused.")
    paused_reason = serializers.SerializerMethodField(help_text="Who paused it, when and why; empty when not paused.")

    class Meta:
        model = Project
        fields = [
            "id",
            "name",
            "embedder",
            "embedding_model",
            "embedding_dimensions",
            "created_at",
            "paused",
            "paused_reason",
            "max_documents",
            "max_chunks",
            "max_upload_mb_total",
        ]
        read_only_fields = fields

    def get_paused(self, project) -> bool:
        return pause_state(self.context, project_id=project.id)[0]

    def get_paused_reason(self, project) -> str:
        return pause_state(self.context, project_id=project.id)[1]


class ProjectDetailSerializer(ProjectSerializer):
    document_counts = serializers.SerializerMethodField()

    class Meta(ProjectSerializer.Meta):
        fields = ProjectSerializer.Meta.fields + ["document_counts"]
        read_only_fields = fields

    def get_document_counts(self, project) -> dict[str, int]:
        return selectors.document_counts_by_status(project)


class DocumentUploadSerializer(StrictSerializer):
    file = serializers.FileField(allow_empty_file=True)
    metadata = serializers.CharField(required=False, allow_blank=True, max_length=100_000)
    priority = priority_field()

    def validate_metadata(self, value: str) -> dict:
        if not value:
            return {}
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as exc:
            raise serializers.ValidationError(
                f"Not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})."
            ) from None
        if not isinstance(parsed, dict):
            raise serializers.ValidationError("Must be a JSON object.")
        return parsed


class UnsupportedFileTypeSerializer(serializers.Serializer):
    detail = serializers.CharField()
    # Present when the content was sniffed; absent when the request itself
    # was not multipart/form-data.
    detected_type = serializers.CharField(required=False)


class DocumentSerializer(serializers.ModelSerializer):
    chunks_total = serializers.IntegerField(read_only=True)
    chunks_processed = serializers.IntegerField(read_only=True)
    chunk_counts = serializers.SerializerMethodField()
    progress_percentage = serializers.SerializerMethodField()
    current_job = JobSerializer(read_only=True)
    project_id = serializers.IntegerField(read_only=True)
    queued_at = serializers.SerializerMethodField(help_text="When its current run was submitted.")
    waiting_seconds = serializers.SerializerMethodField(
        help_text="From submission to the first work on its current run (or until now while nobody took it)."
    )
    working_seconds = serializers.SerializerMethodField(
        help_text="From the first work to the end of its current run (or until now); null before any work."
    )
    queue_position = serializers.SerializerMethodField(
        help_text="While its job is pending: how many waiting jobs will start before it; null otherwise."
    )
    eta_seconds = serializers.SerializerMethodField(
        help_text="While indexing: remaining chunks over the speed its run has had so far; null when there is "
        "no honest estimate yet."
    )

    class Meta:
        model = Document
        fields = [
            "id",
            "project_id",
            "filename",
            "file_type",
            "size_bytes",
            "content_sha256",
            "status",
            "error_message",
            "metadata",
            "chunks_total",
            "chunks_processed",
            "chunk_counts",
            "progress_percentage",
            "queued_at",
            "waiting_seconds",
            "working_seconds",
            "queue_position",
            "eta_seconds",
            "created_at",
            "updated_at",
            "parsing_started_at",
            "parsing_finished_at",
            "embedding_finished_at",
            "indexed_at",
            "current_job",
            "paused",
            "paused_reason",
        ]
        read_only_fields = fields

    def _timing(self, document) -> dict:
        cached = getattr(document, "_timing", None)
        if cached is None:
            cached = document._timing = selectors.document_timing(document, now=response_now(self.context))
        return cached

    def get_queued_at(self, document) -> str:
        return serializers.DateTimeField().to_representation(self._timing(document)["queued_at"])

    def get_waiting_seconds(self, document) -> float | None:
        return self._timing(document)["waiting_seconds"]

    def get_working_seconds(self, document) -> float | None:
        return self._timing(document)["working_seconds"]

    def get_queue_position(self, document) -> int | None:
        return self._timing(document)["queue_position"]

    def get_eta_seconds(self, document) -> float | None:
        return self._timing(document)["eta_seconds"]

    paused = serializers.SerializerMethodField(
        help_text="The document is pending or indexing and its project, or the deployment, is paused."
    )
    paused_reason = serializers.SerializerMethodField(help_text="Who paused it, when and why; empty when not paused.")

    def get_paused(self, document) -> bool:
        return pause_state(
            self.context, project_id=document.project_id, active=document.status in Document.ACTIVE_STATUSES
        )[0]

    def get_paused_reason(self, document) -> str:
        return pause_state(
            self.context, project_id=document.project_id, active=document.status in Document.ACTIVE_STATUSES
        )[1]

    def get_chunk_counts(self, document) -> dict[str, int]:
        return selectors.chunk_counts_of(document)

    def get_progress_percentage(self, document) -> int:
        return selectors.progress_percent(document)


def document_rows(documents, context: dict | None = None) -> list[dict]:
    """What DocumentSerializer(documents, many=True, context=context).data
    holds (same keys in the same order, same values), as plain dicts, for
    documents annotated by selectors.documents_with_progress: the documents
    list answers 50 per page, and DRF's per-field work was most of its CPU.
    tests/api/test_list_rows.py holds the two equal; a field added to the
    serializer is added here too."""
    context = {} if context is None else context
    zone = timezone.get_current_timezone()
    now = response_now(context)
    return [_document_row(document, context, zone, now) for document in documents]


def _document_row(document, context: dict, zone, now) -> dict:
    # Before the job's row: it gives the job its annotated queue position.
    times = selectors.document_timing(document, now=now)
    paused, paused_reason = pause_state(
        context, project_id=document.project_id, active=document.status in Document.ACTIVE_STATUSES
    )
    job = document.current_job
    return {
        "id": document.id,
        "project_id": document.project_id,
        "filename": document.filename,
        "file_type": document.file_type,
        "size_bytes": document.size_bytes,
        "content_sha256": document.content_sha256,
        "status": document.status,
        "error_message": document.error_message,
        "metadata": document.metadata,
        "chunks_total": document.chunks_total,
        "chunks_processed": document.chunks_processed,
        "chunk_counts": selectors.chunk_counts_of(document),
        "progress_percentage": selectors.progress_percent(document),
        "queued_at": datetime_text(times["queued_at"], zone),
        "waiting_seconds": times["waiting_seconds"],
        "working_seconds": times["working_seconds"],
        "queue_position": times["queue_position"],
        "eta_seconds": times["eta_seconds"],
        "created_at": datetime_text(document.created_at, zone),
        "updated_at": datetime_text(document.updated_at, zone),
        "parsing_started_at": datetime_text(document.parsing_started_at, zone),
        "parsing_finished_at": datetime_text(document.parsing_finished_at, zone),
        "embedding_finished_at": datetime_text(document.embedding_finished_at, zone),
        "indexed_at": datetime_text(document.indexed_at, zone),
        "current_job": None if job is None else job_row(job, context=context, zone=zone),
        "paused": paused,
        "paused_reason": paused_reason,
    }


class DocumentFilterSerializer(StrictSerializer):
    status = serializers.ChoiceField(choices=Document.Status.choices, required=False)
    type = serializers.ChoiceField(choices=Document.FileType.choices, required=False)
    page = serializers.IntegerField(min_value=1, required=False)


class ChunkSerializer(serializers.ModelSerializer):
    class Meta:
        model = Chunk
        fields = [
            "id",
            "document_id",
            "position",
            "content",
            "structure",
            "status",
            "error",
            "token_count",
            "embedding_model",
            "attempts",
            "updated_at",
        ]
        read_only_fields = fields


class ChunkFilterSerializer(StrictSerializer):
    status = serializers.ChoiceField(choices=Chunk.Status.choices, required=False)
    page = serializers.IntegerField(min_value=1, required=False)


class RetryInputSerializer(StrictSerializer):
    include_corrupted = serializers.BooleanField(required=False, default=False)
    priority = priority_field()


class ReindexInputSerializer(StrictSerializer):
    priority = priority_field()


class ImportInputSerializer(StrictSerializer):
    path = serializers.CharField(max_length=4096)
    priority = priority_field()


class PauseInputSerializer(StrictSerializer):
    reason = serializers.CharField(max_length=2000, help_text="Why the work is paused; shown wherever it is.")

    def validate_reason(self, value: str) -> str:
        value = value.strip()
        if not value:
            raise serializers.ValidationError("This field may not be blank.")
        return value


class ResumeInputSerializer(StrictSerializer):
    reason = serializers.CharField(max_length=2000, required=False, default="", allow_blank=True)


class PauseSerializer(serializers.Serializer):
    scope = serializers.SerializerMethodField()
    project_id = serializers.IntegerField(allow_null=True)
    reason = serializers.CharField()
    paused_by = serializers.CharField()
    paused_at = serializers.DateTimeField()
    resumed_by = serializers.CharField()
    resumed_at = serializers.DateTimeField(allow_null=True)

    def get_scope(self, pause) -> Literal["project", "deployment"]:
        return "project" if pause.project_id is not None else "deployment"


class FlatListField(serializers.ListField):
    """A repeatable query parameter whose errors are a plain list of
    messages ("item 2: ..."), the shape every 400 of the API has."""

    def run_child_validation(self, data):
        result, errors = [], []
        for index, item in enumerate(data):
            try:
                result.append(self.child.run_validation(item))
            except serializers.ValidationError as exc:
                errors.extend(f"item {index + 1}: {message}" for message in exc.detail)
        if errors:
            raise serializers.ValidationError(errors)
        return result


class SearchQuerySerializer(StrictSerializer):
    q = serializers.CharField(max_length=2000)
    k = serializers.IntegerField(min_value=1, max_value=MAX_K, required=False, default=10)
    mode = serializers.ChoiceField(choices=MODES, required=False, default="semantic")
    document = FlatListField(child=serializers.IntegerField(min_value=1), required=False, max_length=1000)
    type = serializers.ChoiceField(choices=Document.FileType.choices, required=False)
    metadata = serializers.CharField(required=False, max_length=10_000)
    created_after = serializers.DateTimeField(required=False)
    created_before = serializers.DateTimeField(required=False)
    heading = FlatListField(child=serializers.CharField(max_length=500), required=False, max_length=20)
    context = serializers.IntegerField(min_value=0, max_value=MAX_CONTEXT, required=False, default=0)

    def validate_metadata(self, value: str) -> dict:
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as exc:
            raise serializers.ValidationError(f"Not valid JSON: {exc.msg} (column {exc.colno}).") from None
        if not isinstance(parsed, dict):
            raise serializers.ValidationError("Must be a JSON object.")
        return parsed

    def filters(self) -> SearchFilters:
        data = self.validated_data
        return SearchFilters(
            documents=tuple(data.get("document") or ()),
            file_type=data.get("type"),
            metadata=data.get("metadata"),
            created_after=data.get("created_after"),
            created_before=data.get("created_before"),
            heading=tuple(data.get("heading") or ()),
        )


class NeighbourSerializer(serializers.Serializer):
    position = serializers.IntegerField()
    content = serializers.CharField()
    start_offset = serializers.IntegerField(allow_null=True)
    end_offset = serializers.IntegerField(allow_null=True)


class SearchHitSerializer(serializers.Serializer):
    chunk_id = serializers.IntegerField()
    document_id = serializers.IntegerField()
    filename = serializers.CharField()
    position = serializers.IntegerField()
    content = serializers.CharField()
    structure = serializers.JSONField()
    score = serializers.FloatField()
    page = serializers.SerializerMethodField()
    chapter = serializers.SerializerMethodField()
    slide = serializers.SerializerMethodField()
    sheet = serializers.SerializerMethodField()
    heading_path = serializers.SerializerMethodField()
    start_offset = serializers.IntegerField(
        allow_null=True,
        help_text="Where the chunk starts in the document's extracted text (its sections in "
        "reading order, joined by a blank line); null for chunks stored before offsets were kept.",
    )
    end_offset = serializers.IntegerField(allow_null=True, help_text="Where the chunk ends (exclusive).")
    highlights = serializers.ListField(
        child=serializers.CharField(), help_text="keyword and hybrid: fragments with matches in <mark>...</mark>."
    )
    context_before = NeighbourSerializer(many=True, help_text="with context=N: up to N chunks before, in order.")
    context_after = NeighbourSerializer(many=True, help_text="with context=N: up to N chunks after, in order.")

    def get_page(self, hit) -> int | None:
        return hit.structure.get("page")

    def get_chapter(self, hit) -> str | None:
        return hit.structure.get("chapter")

    def get_slide(self, hit) -> int | None:
        return hit.structure.get("slide")

    def get_sheet(self, hit) -> str | None:
        return hit.structure.get("sheet")

    def get_heading_path(self, hit) -> list[str] | None:
        return hit.structure.get("heading_path")


def max_upload_bytes() -> int:
    return settings.MIRAGE_MAX_UPLOAD_MB * 1024 * 1024
