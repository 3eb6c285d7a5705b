"""The operator's view of jobs: read-only, with live progress and a cancel action."""
from __future__ import annotations

from django.contrib import admin, messages
from django.http import HttpRequest, JsonResponse
from django.urls import path, reverse
from django.utils.html import format_html

from common import history
from common.admin_widgets import (
    EMPTY,
    LIVE_MEDIA_CSS,
    LIVE_MEDIA_JS,
    ReadOnlyModelAdmin,
    display_value,
    flower_task_url,
    live_badge,
    live_field,
    live_ids,
    live_progress,
    pretty_json,
)
from jobs import services
from jobs.models import Job

# --- Jobs -----------------------------------------------------------------------------


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
            "error_message": display_value(job.error_message),
        },
    }


@admin.register(Job)
class JobAdmin(ReadOnlyModelAdmin):
    list_display = [
        "id",
        "kind",
        "status_badge",
        "priority",
        "progress_with_message",
        "files_live",
        "chunks_live",
        "times_live",
    ]
    list_display_links = ["id", "kind"]
    list_filter = ["status", "priority", "kind"]
    search_fields = ["error_type", "error_message", "progress_message"]
    actions = ["cancel_jobs"]
    fieldsets = [
        (None, {"fields": ["kind", "status_badge", "progress_bar", "progress_message_live", "parent_link",
                           "project_id", "subject_id"]}),
        ("Counters", {"fields": ["files_scanned_live", "files_indexed_live", "chunks_created_live",
                                 "chunks_failed_live"]}),
        ("Times", {"fields": ["created_at_display", "started_at_live", "completed_at_live", "cancelled_at_display",
                              "updated_at_display"]}),
        ("Error", {"fields": ["error_type", "error_message_live", "error_traceback_block"]}),
        ("Celery", {"fields": ["celery_task_link", "celery_chord_link"]}),
        ("Metadata", {"fields": ["metadata_block"]}),
    ]
    readonly_fields = [
        "status_badge", "progress_bar", "progress_message_live", "parent_link",
        "files_scanned_live", "files_indexed_live", "chunks_created_live", "chunks_failed_live",
        "created_at_display", "started_at_live", "completed_at_live", "cancelled_at_display", "updated_at_display",
        "error_message_live", "error_traceback_block", "celery_task_link", "celery_chord_link", "metadata_block",
    ]

    class Media:
        css = LIVE_MEDIA_CSS
        js = LIVE_MEDIA_JS

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
        return live_progress(url=self.live_url, object_id=job.id, status=job.status,
                             percent=job.progress_percentage, label=f"{job.progress_percentage}%")

    @admin.display(description="Progress", ordering="progress_percentage")
    def progress_with_message(self, job: Job) -> str:
        return format_html(
            '{}<span class="mirage-progress__message">{}</span>',
            self.progress_bar(job),
            self._live_field(job, "progress_message"),
        )

    @admin.display(description="Files")
    def files_live(self, job: Job) -> str:
        return format_html('<span class="mirage-counters">{} scanned<br>{} indexed</span>',
                           self._live_field(job, "files_scanned"), self._live_field(job, "files_indexed"))

    @admin.display(description="Chunks")
    def chunks_live(self, job: Job) -> str:
        return format_html('<span class="mirage-counters">{} created<br>{} failed</span>',
                           self._live_field(job, "chunks_created"), self._live_field(job, "chunks_failed"))

    @admin.display(description="Times", ordering="created_at")
    def times_live(self, job: Job) -> str:
        return format_html(
            '<span class="mirage-times"><small>created</small> {}<br><small>started</small> {}<br>'
            "<small>completed</small> {}</span>",
            display_value(job.created_at),
            self._live_field(job, "started_at"),
            self._live_field(job, "completed_at"),
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
        return format_html('<a href="{}" target="_blank" rel="noopener">{}</a> (Flower)', flower_task_url(task_id),
                           task_id)

    @admin.action(description="Cancel selected jobs", permissions=["operate"])
    def cancel_jobs(self, request: HttpRequest, queryset):
        cancelled = 0
        for job in queryset:
            try:
                services.job_cancel(job_id=job.id, actor=history.operator_actor(request.user),
                                    reason="cancelled in the admin")
            except services.JobAlreadyFinished as exc:
                self.message_user(request, str(exc), messages.WARNING)
            else:
                cancelled += 1
        if cancelled:
            self.message_user(request, f"Cancelled {cancelled} job{'s' if cancelled != 1 else ''}.", messages.SUCCESS)
        return self.action_response(request)
