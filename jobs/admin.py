"""The operator's view of jobs: read-only, with live progress and a cancel action."""

from __future__ import annotations

from django.contrib import admin, messages
from django.http import HttpRequest, JsonResponse
from django.urls import path, reverse
from django.utils import formats, timezone
from django.utils.html import format_html

from common import history
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
    live_ids,
    live_progress,
    pretty_json,
    project_name_expression,
    short_text,
)
from jobs import registry, services
from jobs.models import Job

# A file name or directory path in the list: long ones are cut, whole in the tooltip.
SUBJECT_CHARS = 48

# --- Jobs -----------------------------------------------------------------------------


def time_after_created(job: Job, moment) -> str:
    """A moment of the job as its list shows it: the time alone on the day
    the job was created (the list shows that date above it), else the date
    and time."""
    if moment is None:
        return EMPTY
    if timezone.localdate(moment) == timezone.localdate(job.created_at):
        return formats.date_format(timezone.localtime(moment), "H:i:s")
    return display_value(moment)


def job_live_state(job: Job) -> dict:
    return {
        "status": job.status,
        "final": job.is_final,
        "percent": job.progress_percentage,
        "label": f"{job.progress_percentage}%",
        "fields": {
            "progress_message": display_value(job.progress_message),
            "files_scanned": job.files_scanned,
            "files_indexed": job.files_indexed,
            "chunks_created": job.chunks_created,
            "chunks_failed": job.chunks_failed,
            "started_at": display_value(job.started_at),
            "completed_at": display_value(job.completed_at),
            "started_time": time_after_created(job, job.started_at),
            "completed_time": time_after_created(job, job.completed_at),
            "error_message": display_value(job.error_message),
        },
    }


class KindFilter(admin.SimpleListFilter):
    """Job kinds by the labels operators read (jobs.registry), not their codes."""

    title = "kind"
    parameter_name = "kind"

    def lookups(self, request, model_admin):
        return registry.kinds()

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(kind=self.value())
        return queryset


@admin.register(Job)
class JobAdmin(ReadOnlyModelAdmin):
    list_display = [
        "id",
        "kind_label",
        "subject",
        "project_name",
        "status_badge",
        "progress_with_message",
        "counters_live",
        "times_live",
    ]
    list_display_links = ["id", "kind_label"]
    list_filter = ["status", "priority", KindFilter]
    search_fields = ["error_type", "error_message", "progress_message"]
    actions = ["cancel_jobs"]
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "kind_label",
                    "subject",
                    "status_badge",
                    "progress_bar",
                    "progress_message_live",
                    "parent_link",
                    "project_name",
                    "project_id",
                    "subject_id",
                ]
            },
        ),
        (
            "Counters",
            {"fields": ["files_scanned_live", "files_indexed_live", "chunks_created_live", "chunks_failed_live"]},
        ),
        (
            "Times",
            {
                "fields": [
                    "created_at_display",
                    "started_at_live",
                    "completed_at_live",
                    "cancelled_at_display",
                    "updated_at_display",
                ]
            },
        ),
        ("Error", {"fields": ["error_type", "error_message_live", "error_traceback_block"]}),
        ("Celery", {"fields": ["celery_task_link", "celery_chord_link"]}),
        ("Metadata", {"fields": ["metadata_block"]}),
    ]
    readonly_fields = [
        "kind_label",
        "subject",
        "project_name",
        "status_badge",
        "progress_bar",
        "progress_message_live",
        "parent_link",
        "files_scanned_live",
        "files_indexed_live",
        "chunks_created_live",
        "chunks_failed_live",
        "created_at_display",
        "started_at_live",
        "completed_at_live",
        "cancelled_at_display",
        "updated_at_display",
        "error_message_live",
        "error_traceback_block",
        "celery_task_link",
        "celery_chord_link",
        "metadata_block",
    ]

    class Media:
        css = LIVE_MEDIA_CSS
        js = LIVE_MEDIA_JS

    def changelist_view(self, request: HttpRequest, extra_context=None):
        return super().changelist_view(request, extra_context={**WIDE_LIST_CONTEXT, **(extra_context or {})})

    def get_fieldsets(self, request: HttpRequest, obj=None):
        if obj is None or obj.subject_id is None:
            return self.fieldsets
        # A job with one subject counts chunks, not files (see counters_live).
        hidden = {"files_scanned_live", "files_indexed_live"}
        return [
            (name, {**options, "fields": [field for field in options["fields"] if field not in hidden]})
            for name, options in self.fieldsets
        ]

    def get_queryset(self, request: HttpRequest):
        # The project's name in the same query as the page's jobs.
        return super().get_queryset(request).annotate(project_name_value=project_name_expression("project_id"))

    def get_urls(self):
        return [
            path("progress/", self.admin_site.admin_view(self.progress_view), name="jobs_job_progress"),
            *super().get_urls(),
        ]

    def progress_view(self, request: HttpRequest) -> JsonResponse:
        """Status and progress of `?ids=...` jobs, for the live pages (one query)."""
        if not self.has_view_permission(request):
            return JsonResponse({"error": "permission denied"}, status=403)
        jobs = Job.objects.filter(id__in=live_ids(request))
        return JsonResponse({"items": {str(job.id): job_live_state(job) for job in jobs}})

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        context["can_cancel"] = obj is not None and not obj.is_final and self.has_operate_permission(request)
        return super().render_change_form(request, context, add=add, change=change, form_url=form_url, obj=obj)

    @property
    def live_url(self) -> str:
        return reverse("admin:jobs_job_progress", current_app=self.admin_site.name)

    def _live_field(self, job: Job, field: str) -> str:
        return live_field(url=self.live_url, object_id=job.id, field=field, value=getattr(job, field))

    @admin.display(description="Status", ordering="status")
    def status_badge(self, job: Job) -> str:
        return live_badge(url=self.live_url, object_id=job.id, status=job.status)

    @admin.display(description="Progress", ordering="progress_percentage")
    def progress_bar(self, job: Job) -> str:
        return live_progress(
            url=self.live_url,
            object_id=job.id,
            status=job.status,
            percent=job.progress_percentage,
            label=f"{job.progress_percentage}%",
        )

    @admin.display(description="Progress", ordering="progress_percentage")
    def progress_with_message(self, job: Job) -> str:
        return format_html(
            '{}<span class="mirage-progress__message">{}</span>',
            self.progress_bar(job),
            self._live_field(job, "progress_message"),
        )

    @admin.display(description="Kind", ordering="kind")
    def kind_label(self, job: Job) -> str:
        # The priority rides with the kind (a column of its own would push
        # the list past 1,280 px); normal, the usual, is not repeated.
        label = registry.label_for(job.kind)
        return label if job.priority == Job.Priority.NORMAL else f"{label} ({job.priority} priority)"

    @admin.display(description="File")
    def subject(self, job: Job) -> str:
        # Document jobs carry their file's name; an import, its directory;
        # other kinds what their subject is in words.
        words = job.metadata.get("filename") or job.metadata.get("path") or job.metadata.get("subject_label")
        return short_text(words or "", chars=SUBJECT_CHARS)

    @admin.display(description="Project", ordering="project_id")
    def project_name(self, job: Job) -> str:
        name = getattr(job, "project_name_value", "")
        if job.project_id is None:
            return EMPTY
        return name or f"project {job.project_id}"

    @admin.display(description="Counts")
    def counters_live(self, job: Job) -> str:
        chunks = format_html(
            "{} chunks<br>{} failed",
            self._live_field(job, "chunks_created"),
            self._live_field(job, "chunks_failed"),
        )
        # Only a job over many files (an import, which has no single
        # subject) counts files; "0 scanned / 1 indexed" on a document's
        # own job reads as a fault.
        if job.subject_id is not None:
            return format_html('<span class="mirage-counters">{}</span>', chunks)
        return format_html(
            '<span class="mirage-counters">{} files scanned<br>{} indexed<br>{}</span>',
            self._live_field(job, "files_scanned"),
            self._live_field(job, "files_indexed"),
            chunks,
        )

    @admin.display(description="Times", ordering="created_at")
    def times_live(self, job: Job) -> str:
        # The date once, then each step's time: date and time of every step
        # in a column narrow enough for the list to fit 1,280 px.
        live = {
            field: format_html(
                '<span data-live-url="{}" data-live-id="{}" data-live-role="field" data-live-field="{}">{}</span>',
                self.live_url,
                job.id,
                field,
                time_after_created(job, getattr(job, f"{step}_at")),
            )
            for step, field in (("started", "started_time"), ("completed", "completed_time"))
        }
        return format_html(
            '<span class="mirage-times">{}<br><small>created</small> {}<br><small>started</small> {}<br>'
            "<small>completed</small> {}</span>",
            formats.date_format(timezone.localtime(job.created_at), "Y-m-d"),
            time_after_created(job, job.created_at),
            live["started_time"],
            live["completed_time"],
        )

    @admin.display(description="Message")
    def progress_message_live(self, job: Job) -> str:
        return self._live_field(job, "progress_message")

    @admin.display(description="Files scanned", ordering="files_scanned")
    def files_scanned_live(self, job: Job) -> str:
        return self._live_field(job, "files_scanned")

    @admin.display(description="Files indexed", ordering="files_indexed")
    def files_indexed_live(self, job: Job) -> str:
        return self._live_field(job, "files_indexed")

    @admin.display(description="Chunks", ordering="chunks_created")
    def chunks_created_live(self, job: Job) -> str:
        return self._live_field(job, "chunks_created")

    @admin.display(description="Failed", ordering="chunks_failed")
    def chunks_failed_live(self, job: Job) -> str:
        return self._live_field(job, "chunks_failed")

    @admin.display(description="Created", ordering="created_at")
    def created_at_display(self, job: Job) -> str:
        return display_value(job.created_at)

    @admin.display(description="Cancelled", ordering="cancelled_at")
    def cancelled_at_display(self, job: Job) -> str:
        return display_value(job.cancelled_at)

    @admin.display(description="Updated", ordering="updated_at")
    def updated_at_display(self, job: Job) -> str:
        return display_value(job.updated_at)

    @admin.display(description="Started", ordering="started_at")
    def started_at_live(self, job: Job) -> str:
        return self._live_field(job, "started_at")

    @admin.display(description="Completed", ordering="completed_at")
    def completed_at_live(self, job: Job) -> str:
        return self._live_field(job, "completed_at")

    @admin.display(description="Error message")
    def error_message_live(self, job: Job) -> str:
        return self._live_field(job, "error_message")

    @admin.display(description="Parent job")
    def parent_link(self, job: Job) -> str:
        if job.parent_id is None:
            return EMPTY
        url = reverse("admin:jobs_job_change", args=[job.parent_id], current_app=self.admin_site.name)
        return format_html('<a href="{}">Job {}</a>', url, job.parent_id)

    @admin.display(description="Error traceback")
    def error_traceback_block(self, job: Job) -> str:
        if not job.error_traceback:
            return EMPTY
        return format_html('<pre class="mirage-pre">{}</pre>', job.error_traceback)

    @admin.display(description="Celery task")
    def celery_task_link(self, job: Job) -> str:
        return self._flower_link(job.celery_task_id)

    @admin.display(description="Celery chord")
    def celery_chord_link(self, job: Job) -> str:
        return self._flower_link(job.celery_chord_id)

    @admin.display(description="Metadata")
    def metadata_block(self, job: Job) -> str:
        return pretty_json(job.metadata)

    @staticmethod
    def _flower_link(task_id: str) -> str:
        if not task_id:
            return EMPTY
        return format_html(
            '<a href="{}" target="_blank" rel="noopener">{}</a> (Flower)', flower_task_url(task_id), task_id
        )

    @admin.action(description="Cancel selected jobs", permissions=["operate"])
    def cancel_jobs(self, request: HttpRequest, queryset):
        cancelled = 0
        for job in queryset:
            try:
                services.job_cancel(
                    job_id=job.id, actor=history.operator_actor(request.user), reason="cancelled in the admin"
                )
            except services.JobAlreadyFinished as exc:
                self.message_user(request, str(exc), messages.WARNING)
            else:
                cancelled += 1
        if cancelled:
            self.message_user(request, f"Cancelled {cancelled} job{'s' if cancelled != 1 else ''}.", messages.SUCCESS)
        return self.action_response(request)
