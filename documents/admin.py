"""The operator's view of projects and documents.

Documents are read-only here: every change (upload, retry, reindex, cancel)
goes through documents.services or jobs.services, and a refusal
(DocumentBusy, JobAlreadyFinished) is shown as a message.
"""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.auth import get_permission_codename
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db.models import Count, Exists, OuterRef, Subquery
from django.db.models.functions import Substr
from django.http import HttpRequest
from django.template.defaultfilters import filesizeformat
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from common import history, pauses
from common.admin_widgets import (
    EMPTY,
    LIVE_MEDIA_CSS,
    LIVE_MEDIA_JS,
    WIDE_LIST_CONTEXT,
    ReadOnlyModelAdmin,
    display_value,
    flower_task_url,
    live_badge,
    live_field,
    live_progress,
    pretty_json,
    register_project_name_expression,
    short_text,
)
from common.models import Pause
from documents import admin_views, selectors, services
from documents.embeddings import EmbeddingError, get_embedder
from documents.models import Chunk, Document, Project
from jobs import registry
from jobs import services as job_services
from jobs.models import Job

CHUNKS_PER_PAGE = 50
QUOTA_FIELDS = ("max_documents", "max_chunks", "max_upload_mb_total")
CHUNK_EXCERPT_CHARS = 160
# The list's error column: enough to tell one failure from another.
ERROR_SUMMARY_CHARS = 70

admin.site.site_header = "Mirage administration"
admin.site.site_title = "Mirage admin"


def _project_name(field: str) -> Subquery:
    return Subquery(Project.objects.filter(id=OuterRef(field)).values("name")[:1])


# The job pages (jobs imports nothing from documents) show project names.
register_project_name_expression(_project_name)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


# --- Projects ---------------------------------------------------------------------


class ProjectCreateForm(forms.ModelForm):
    embedder = forms.CharField(
        required=False,
        help_text="hash, local, ollama, openai or a dotted path to an Embedder class; "
        "blank for the configured default (MIRAGE_EMBEDDER). Pinned for the project's lifetime.",
    )

    class Meta:
        model = Project
        fields = ["name", "embedder", "members"]

    def clean_name(self) -> str:
        # Projects created here have no owner; their names are unique among
        # those (the database's constraint, checked before it can fail).
        name = self.cleaned_data["name"].strip()
        if Project.objects.filter(owner__isnull=True, name=name).exclude(pk=self.instance.pk).exists():
            raise ValidationError("A project without an owner already has this name.")
        return name

    def clean_embedder(self) -> str:
        spec = self.cleaned_data["embedder"].strip() or settings.MIRAGE_EMBEDDER
        try:
            get_embedder(spec)
        except (ValueError, ImportError, OSError, EmbeddingError) as exc:
            raise ValidationError(f"cannot use embedder {spec!r}: {exc}") from exc
        return spec


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "embedder",
        "embedding_model",
        "embedding_dimensions",
        "member_count",
        "document_count",
        "paused_state",
        "created_at",
    ]
    search_fields = ["name"]
    filter_horizontal = ["members"]
    actions = ["pause_projects", "resume_projects"]

    @admin.display(description="Paused")
    def paused_state(self, project: Project) -> str:
        return pauses.pause_words(pauses.pause_for_project(project.id)) or EMPTY

    @admin.action(description="Pause the work of the selected projects", permissions=["change"])
    def pause_projects(self, request: HttpRequest, queryset):
        actor = history.operator_actor(request.user)
        for project in queryset:
            try:
                services.project_pause(project=project, actor=actor, reason=f"paused in the admin by {request.user}")
            except pauses.AlreadyPaused as exc:
                self.message_user(request, str(exc), messages.WARNING)
            else:
                self.message_user(request, f"{project.name}: paused", messages.SUCCESS)

    @admin.action(description="Resume the work of the selected projects", permissions=["change"])
    def resume_projects(self, request: HttpRequest, queryset):
        actor = history.operator_actor(request.user)
        for project in queryset:
            try:
                services.project_resume(project=project, actor=actor, reason="resumed in the admin")
            except pauses.NotPaused as exc:
                self.message_user(request, str(exc), messages.WARNING)
            else:
                self.message_user(request, f"{project.name}: resumed", messages.SUCCESS)

    def get_queryset(self, request: HttpRequest):
        return (
            super()
            .get_queryset(request)
            .annotate(member_total=Count("members", distinct=True), document_total=Count("documents", distinct=True))
        )

    def get_form(self, request: HttpRequest, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = ProjectCreateForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fields(self, request: HttpRequest, obj=None):
        if obj is None:
            return ["name", "embedder", "members"]
        return [
            "name",
            "members",
            "max_documents",
            "max_chunks",
            "max_upload_mb_total",
            "embedder",
            "embedding_model",
            "embedding_dimensions",
            "embedding_migration",
            "created_at",
        ]

    def get_readonly_fields(self, request: HttpRequest, obj=None):
        # Every vector of a project comes from its pinned model; only a
        # migration job (POST /api/v1/projects/{id}/embedder/) changes it, so
        # old and new vectors are never compared.
        if obj is None:
            return []
        return ["embedder", "embedding_model", "embedding_dimensions", "embedding_migration", "created_at"]

    @admin.display(description="Embedding migration")
    def embedding_migration(self, project: Project) -> str:
        """The model the project is moving to and its job's progress, or how
        its last migration ended."""
        job = Job.objects.filter(id=project.embedder_job_id).first() if project.embedder_job_id else None
        if job is None:
            return EMPTY
        url = reverse("admin:jobs_job_change", args=[job.id], current_app=self.admin_site.name)
        if project.next_embedder:
            return format_html(
                'moving to {} ({} dimensions): <a href="{}">job {}</a>, {}, {}% ({}); searches use {} until the switch',
                project.next_embedding_model,
                project.next_embedding_dimensions,
                url,
                job.id,
                job.status,
                job.progress_percentage,
                job.progress_message,
                project.embedding_model,
            )
        return format_html(
            'last migration: <a href="{}">job {}</a>, {} ({})',
            url,
            job.id,
            job.status,
            job.progress_message or job.error_message,
        )

    def save_model(self, request: HttpRequest, obj: Project, form, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            quotas = {name: form.cleaned_data.get(name) for name in QUOTA_FIELDS if name in form.changed_data}
            if quotas:
                history.audit_record(
                    project_id=obj.id,
                    actor=history.operator_actor(request.user),
                    action="project.quotas",
                    target=f"project {obj.name}",
                    **quotas,
                )
            return
        project = services.project_create(
            name=form.cleaned_data["name"],
            embedder=form.cleaned_data["embedder"],
            members=list(form.cleaned_data["members"]),
            actor=history.operator_actor(request.user),
        )
        # The admin goes on with `obj` (messages, redirect, log entry).
        for field in Project._meta.concrete_fields:
            setattr(obj, field.attname, getattr(project, field.attname))
        obj._state.adding = False
        obj._state.db = project._state.db

    def save_related(self, request: HttpRequest, form, formsets, change: bool) -> None:
        # project_create already added the members of a new project.
        if change:
            super().save_related(request, form, formsets, change)

    @admin.display(description="Members", ordering="member_total")
    def member_count(self, project: Project) -> int:
        return project.member_total

    @admin.display(description="Documents", ordering="document_total")
    def document_count(self, project: Project) -> int:
        return project.document_total


# --- Documents ----------------------------------------------------------------------


class HasFailedChunksFilter(admin.SimpleListFilter):
    title = "failed chunks"
    parameter_name = "has_failed_chunks"

    def lookups(self, request, model_admin):
        return [("yes", "Has failed chunks"), ("no", "No failed chunks")]

    def queryset(self, request, queryset):
        # A subquery, not a join: a join on chunks would multiply the rows
        # the progress counts are taken over.
        failed = Exists(Chunk.objects.filter(document=OuterRef("pk"), status=Chunk.Status.ERROR))
        if self.value() == "yes":
            return queryset.filter(failed)
        if self.value() == "no":
            return queryset.filter(~failed)
        return queryset


class StuckFilter(admin.SimpleListFilter):
    title = "stuck"
    parameter_name = "stuck"

    def lookups(self, request, model_admin):
        return [("yes", "Chunk past its lease"), ("no", "Not stuck")]

    def queryset(self, request, queryset):
        stuck = Exists(
            Chunk.objects.filter(
                document=OuterRef("pk"), status=Chunk.Status.PROCESSING, lease_expires_at__lt=timezone.now()
            )
        )
        if self.value() == "yes":
            return queryset.filter(stuck)
        if self.value() == "no":
            return queryset.filter(~stuck)
        return queryset


@admin.register(Document)
class DocumentAdmin(ReadOnlyModelAdmin):
    # Sized for 1,280 px beside the filters (tests/browser/test_admin_layout.py):
    # the file type rides under the name, long names and reasons wrap.
    list_display = [
        "filename_with_type",
        "status_badge",
        "progress_bar",
        "project",
        "created_at_display",
        "indexed_at_live",
        "error_summary",
    ]
    list_display_links = ["filename_with_type"]
    list_filter = ["status", "file_type", "project", HasFailedChunksFilter, StuckFilter]
    search_fields = ["filename"]
    actions = [
        "retry_failed_chunks",
        "retry_failed_and_truncated_chunks",
        "retry_failed_chunks_high",
        "reindex_documents",
        "reindex_documents_high",
        "cancel_documents",
    ]
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "filename",
                    "project",
                    "file_type",
                    "size",
                    "status_badge",
                    "progress_bar",
                    "error_message_live",
                ]
            },
        ),
        (
            "Stored file",
            {"fields": ["stored_file", "content_sha256", "generation", "metadata_block"], "classes": ["collapse"]},
        ),
    ]
    readonly_fields = ["size", "status_badge", "progress_bar", "error_message_live", "stored_file", "metadata_block"]

    class Media:
        css = LIVE_MEDIA_CSS
        js = LIVE_MEDIA_JS

    def get_queryset(self, request: HttpRequest):
        return selectors.documents_with_progress(super().get_queryset(request))

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("progress/", wrap(self.progress_view), name="documents_document_progress"),
            path("upload/", wrap(self.upload_view), name="documents_document_upload"),
            *super().get_urls(),
        ]

    def progress_view(self, request: HttpRequest):
        return admin_views.document_progress(request, model_admin=self)

    def upload_view(self, request: HttpRequest):
        return admin_views.document_upload(request, model_admin=self)

    def has_upload_permission(self, request: HttpRequest) -> bool:
        codename = get_permission_codename("add", self.opts)
        return request.user.has_perm(f"{self.opts.app_label}.{codename}")

    def changelist_view(self, request: HttpRequest, extra_context=None):
        extra_context = {
            **WIDE_LIST_CONTEXT,
            **(extra_context or {}),
            "has_upload_permission": self.has_upload_permission(request),
        }
        return super().changelist_view(request, extra_context=extra_context)

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None:
            context.update(self._document_page_context(request, obj))
        return super().render_change_form(request, context, add=add, change=change, form_url=form_url, obj=obj)

    def _document_page_context(self, request: HttpRequest, document: Document) -> dict:
        chunk_status = request.GET.get("chunk_status", "")
        if chunk_status not in Chunk.Status.values:
            chunk_status = ""
        chunks = (
            Chunk.objects.filter(document=document)
            .order_by("position")
            .annotate(excerpt=Substr("content", 1, CHUNK_EXCERPT_CHARS))
            .only("id", "position", "status", "token_count", "attempts", "lease_expires_at", "error")
        )
        if chunk_status:
            chunks = chunks.filter(status=chunk_status)
        page = Paginator(chunks, CHUNKS_PER_PAGE).get_page(request.GET.get("chunk_page"))
        counts = selectors.chunk_counts_of(document)
        job = document.current_job
        return {
            "now": timezone.now(),
            "can_operate": self.has_operate_permission(request),
            "document_actions": admin_views.document_actions(document),
            "live_document_url": self.live_url,
            "refresh_key": admin_views.refresh_key(document),
            "timeline": admin_views.document_timeline(document),
            "job": job,
            "job_state": admin_views.document_job_state(document),
            "job_kind_label": registry.label_for(job.kind) if job else "",
            "job_url": reverse("admin:jobs_job_change", args=[job.id], current_app=self.admin_site.name) if job else "",
            "flower_links": [
                (label, task_id, flower_task_url(task_id))
                for label, task_id in (
                    ("Task", job.celery_task_id if job else ""),
                    ("Chord", job.celery_chord_id if job else ""),
                )
                if task_id
            ],
            "chunk_page": page,
            "chunk_status": chunk_status,
            "chunks_notice": admin_views.chunks_notice(document, chunk_status=chunk_status),
            "chunk_filters": [
                {
                    "status": "",
                    "label": "All",
                    "count": document.chunks_total,
                    "field": "chunks_total",
                    "url": self._chunk_query(request, status=""),
                },
                *[
                    {
                        "status": status,
                        "label": status,
                        "count": counts[status],
                        "field": f"chunks_{status}",
                        "url": self._chunk_query(request, status=status),
                    }
                    for status in Chunk.Status.values
                ],
            ],
            "chunk_page_urls": {
                "previous": self._chunk_query(request, status=chunk_status, page=page.previous_page_number())
                if page.has_previous()
                else "",
                "next": self._chunk_query(request, status=chunk_status, page=page.next_page_number())
                if page.has_next()
                else "",
            },
        }

    @staticmethod
    def _chunk_query(request: HttpRequest, *, status: str, page: int | None = None) -> str:
        query = request.GET.copy()
        query.pop("chunk_page", None)
        query.pop("chunk_status", None)
        if status:
            query["chunk_status"] = status
        if page and page > 1:
            query["chunk_page"] = str(page)
        return f"?{query.urlencode()}" if query else "?"

    @property
    def live_url(self) -> str:
        return reverse("admin:documents_document_progress", current_app=self.admin_site.name)

    @admin.display(description="Status", ordering="status")
    def status_badge(self, document: Document) -> str:
        return live_badge(url=self.live_url, object_id=document.id, status=document.status)

    @admin.display(description="Progress")
    def progress_bar(self, document: Document) -> str:
        return live_progress(
            url=self.live_url,
            object_id=document.id,
            status=document.status,
            percent=selectors.progress_percent(document),
            label=admin_views.document_progress_label(document),
        )

    @admin.display(description="File", ordering="filename")
    def filename_with_type(self, document: Document) -> str:
        return format_html(
            '{}<small class="mirage-quiet">{}</small>', document.filename, document.get_file_type_display()
        )

    @admin.display(description="Size", ordering="size_bytes")
    def size(self, document: Document) -> str:
        return filesizeformat(document.size_bytes)

    @admin.display(description="Uploaded", ordering="created_at")
    def created_at_display(self, document: Document) -> str:
        return display_value(document.created_at)

    @admin.display(description="Indexed", ordering="indexed_at")
    def indexed_at_live(self, document: Document) -> str:
        return live_field(url=self.live_url, object_id=document.id, field="indexed_at", value=document.indexed_at)

    @admin.display(description="Error")
    def error_message_live(self, document: Document) -> str:
        return live_field(url=self.live_url, object_id=document.id, field="error_message", value=document.error_message)

    @admin.display(description="Why it failed")
    def error_summary(self, document: Document) -> str:
        # A run in flight may still carry the reason its previous run ended.
        if document.status not in Document.FINAL_STATUSES:
            return ""
        return short_text(document.error_message, chars=ERROR_SUMMARY_CHARS)

    @admin.display(description="Stored as")
    def stored_file(self, document: Document) -> str:
        # The name only: media files are not served by the web process.
        return document.file.name or EMPTY

    @admin.display(description="Metadata")
    def metadata_block(self, document: Document) -> str:
        return pretty_json(document.metadata) if document.metadata else EMPTY

    def _start_for_each(self, request: HttpRequest, queryset, start, done: str):
        """Call a service per document; each refusal becomes a warning."""
        started = 0
        for document in queryset:
            try:
                start(document=document, actor=history.operator_actor(request.user))
            except (services.DocumentBusy, services.NothingToRetry) as exc:
                self.message_user(request, f"{document.filename}: {exc}", messages.WARNING)
            else:
                started += 1
        if started:
            self.message_user(request, done.format(documents=_plural(started, "document")), messages.SUCCESS)
        return self.action_response(request)

    @admin.action(description="Retry failed chunks", permissions=["operate"])
    def retry_failed_chunks(self, request: HttpRequest, queryset):
        return self._start_for_each(
            request, queryset, services.document_retry_failed, "Queued a retry of failed chunks for {documents}."
        )

    @admin.action(description="Retry failed and truncated chunks", permissions=["operate"])
    def retry_failed_and_truncated_chunks(self, request: HttpRequest, queryset):
        def retry(*, document: Document, actor: str):
            return services.document_retry_failed(document=document, include_corrupted=True, actor=actor)

        return self._start_for_each(
            request, queryset, retry, "Queued a retry of failed and truncated chunks for {documents}."
        )

    @admin.action(description="Reindex", permissions=["operate"])
    def reindex_documents(self, request: HttpRequest, queryset):
        return self._start_for_each(request, queryset, services.document_reindex, "Queued a reindex of {documents}.")

    @admin.action(description="Reindex at high priority", permissions=["operate"])
    def reindex_documents_high(self, request: HttpRequest, queryset):
        def start(**kwargs):
            return services.document_reindex(priority="high", **kwargs)

        return self._start_for_each(request, queryset, start, "Queued a high-priority reindex of {documents}.")

    @admin.action(description="Retry failed chunks at high priority", permissions=["operate"])
    def retry_failed_chunks_high(self, request: HttpRequest, queryset):
        def start(**kwargs):
            return services.document_retry_failed(priority="high", **kwargs)

        return self._start_for_each(
            request, queryset, start, "Queued a high-priority retry of failed chunks for {documents}."
        )

    @admin.action(description="Cancel current job", permissions=["operate"])
    def cancel_documents(self, request: HttpRequest, queryset):
        cancelled = 0
        for document in queryset:
            if document.current_job_id is None:
                self.message_user(request, f"{document.filename}: has no job to cancel", messages.WARNING)
                continue
            try:
                job_services.job_cancel(
                    job_id=document.current_job_id,
                    actor=history.operator_actor(request.user),
                    reason="cancelled in the admin",
                )
            except job_services.JobAlreadyFinished as exc:
                self.message_user(request, f"{document.filename}: {exc}", messages.WARNING)
            else:
                cancelled += 1
        if cancelled:
            self.message_user(request, f"Cancelled the jobs of {_plural(cancelled, 'document')}.", messages.SUCCESS)
        return self.action_response(request)


# --- Pauses ---------------------------------------------------------------------------


class PauseForm(forms.ModelForm):
    project = forms.ModelChoiceField(
        queryset=Project.objects.all(),
        required=False,
        help_text="Blank pauses the whole deployment.",
    )

    class Meta:
        model = Pause
        fields = ["reason"]

    def clean(self):
        cleaned = super().clean()
        project = cleaned.get("project")
        current = pauses.pause_of(project_id=project.id if project else None)
        if current is not None:
            raise ValidationError(f"already paused: {pauses.pause_words(current)}")
        return cleaned


@admin.register(Pause)
class PauseAdmin(admin.ModelAdmin):
    """Pauses in force and past ones. Adding one pauses a project (or the
    deployment); the `Resume` action ends the selected ones. Past pauses are
    the record and are never edited."""

    form = PauseForm
    list_display = ["scope", "reason", "paused_by", "paused_at", "resumed_by", "resumed_at"]
    list_filter = [("resumed_at", admin.EmptyFieldListFilter)]
    actions = ["resume_pauses"]

    @admin.display(description="Scope")
    def scope(self, pause: Pause) -> str:
        if pause.project_id is None:
            return "the deployment"
        name = Project.objects.filter(id=pause.project_id).values_list("name", flat=True).first()
        return f"project {name or pause.project_id}"

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return obj is None and super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def get_fields(self, request: HttpRequest, obj=None):
        return (
            ["project", "reason"] if obj is None else ["reason", "paused_by", "paused_at", "resumed_by", "resumed_at"]
        )

    def get_readonly_fields(self, request: HttpRequest, obj=None):
        return [] if obj is None else ["reason", "paused_by", "paused_at", "resumed_by", "resumed_at"]

    def save_model(self, request: HttpRequest, obj: Pause, form, change: bool) -> None:
        actor = history.operator_actor(request.user)
        project = form.cleaned_data.get("project")
        try:
            if project is None:
                pause = services.deployment_pause(reason=form.cleaned_data["reason"], actor=actor)
            else:
                pause = services.project_pause(project=project, reason=form.cleaned_data["reason"], actor=actor)
        except pauses.AlreadyPaused as exc:
            raise ValidationError(str(exc)) from exc
        obj.pk, obj.project_id, obj.paused_by, obj.paused_at = (
            pause.pk,
            pause.project_id,
            pause.paused_by,
            pause.paused_at,
        )
        obj._state.adding = False

    @admin.action(description="Resume (end the selected pauses)", permissions=["change"])
    def resume_pauses(self, request: HttpRequest, queryset):
        actor = history.operator_actor(request.user)
        for pause in queryset.filter(resumed_at__isnull=True):
            try:
                if pause.project_id is None:
                    services.deployment_resume(actor=actor, reason="resumed in the admin")
                else:
                    project = Project.objects.get(id=pause.project_id)
                    services.project_resume(project=project, actor=actor, reason="resumed in the admin")
            except (pauses.NotPaused, Project.DoesNotExist) as exc:
                self.message_user(request, str(exc), messages.WARNING)
            else:
                self.message_user(request, f"resumed {self.scope(pause)}", messages.SUCCESS)


# Webhooks and their deliveries register their own pages.
from documents.webhooks import admin as webhooks_admin  # noqa: E402,F401
