"""The operator's view of jobs: read-only, with live progress and a cancel action.

Also holds the small pieces every Mirage admin page shares (live badges and
progress bars, the id list of a progress feed, the read-only base), here
because `jobs` is the app every other app may import.
"""
from __future__ import annotations

import json
from datetime import datetime

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.auth import get_permission_codename
from django.http import HttpRequest, HttpResponseRedirect, JsonResponse
from django.urls import path, reverse
from django.utils import formats, timezone
from django.utils.html import format_html
from django.utils.http import url_has_allowed_host_and_scheme

from jobs import services
from jobs.models import Job

EMPTY = "-"
DATETIME_FORMAT = "Y-m-d H:i:s"
# A progress request names at most this many objects; a changelist page
# shows 100, so this leaves room without letting one request scan the table.
MAX_LIVE_IDS = 500
LIVE_MEDIA_CSS = {"all": ["documents/admin-live.css"]}
LIVE_MEDIA_JS = ["documents/admin-live.js"]


# --- Shared by the Mirage admin pages ---------------------------------------------


def display_value(value) -> str:
    """A value as the admin shows it (datetimes in the current time zone)."""
    if value is None or value == "":
        return EMPTY
    if isinstance(value, datetime):
        # To the second: a run's steps are often seconds apart.
        return formats.date_format(timezone.template_localtime(value), DATETIME_FORMAT)
    return str(formats.localize(value))


def live_badge(*, url: str, object_id: int, status: str) -> str:
    return format_html(
        '<span class="mirage-badge mirage-badge--{status}" data-live-url="{url}" data-live-id="{id}" '
        'data-live-role="badge">{status}</span>',
        status=status,
        url=url,
        id=object_id,
    )


def live_progress(*, url: str, object_id: int, status: str, percent: int, label: str) -> str:
    return format_html(
        '<div class="mirage-progress mirage-progress--{status}" role="progressbar" aria-valuemin="0" '
        'aria-valuemax="100" aria-valuenow="{percent}" data-live-url="{url}" data-live-id="{id}" '
        'data-live-role="progress"><div class="mirage-progress__track">'
        '<div class="mirage-progress__bar" style="width: {percent}%"></div></div>'
        '<span class="mirage-progress__label">{label}</span></div>',
        status=status,
        percent=percent,
        url=url,
        id=object_id,
        label=label,
    )


def live_field(*, url: str, object_id: int, field: str, value) -> str:
    return format_html(
        '<span data-live-url="{url}" data-live-id="{id}" data-live-role="field" data-live-field="{field}">'
        "{value}</span>",
        url=url,
        id=object_id,
        field=field,
        value=display_value(value),
    )


def live_ids(request: HttpRequest) -> list[int]:
    """The ids of `?ids=1,2,3`; anything that is not an id is ignored."""
    ids = []
    for part in request.GET.get("ids", "").split(","):
        part = part.strip()
        if part.isdigit():
            ids.append(int(part))
    return ids[:MAX_LIVE_IDS]


def flower_task_url(task_id: str) -> str:
    return f"{settings.MIRAGE_FLOWER_URL.rstrip('/')}/task/{task_id}"


def pretty_json(value) -> str:
    return format_html('<pre class="mirage-pre">{}</pre>', json.dumps(value, indent=2, sort_keys=True, default=str))


class ReadOnlyModelAdmin(admin.ModelAdmin):
    """Rows change only through the services: the admin shows them and offers
    actions that call the services; it never saves a form over them."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_operate_permission(self, request: HttpRequest) -> bool:
        """Whether the user may run the actions: Django's `change` permission
        of the model, since the forms themselves are never editable."""
        codename = get_permission_codename("change", self.opts)
        return request.user.has_perm(f"{self.opts.app_label}.{codename}")

    def action_response(self, request: HttpRequest):
        """Back to the page the action was started from (a change page posts
        `_return_to`), or the changelist when there is none."""
        target = request.POST.get("_return_to", "")
        if target and url_has_allowed_host_and_scheme(
            target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
        ):
            return HttpResponseRedirect(target)
        return None


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
        "progress_with_message",
        "files_live",
        "chunks_live",
        "times_live",
    ]
    list_display_links = ["id", "kind"]
    list_filter = ["status", "kind"]
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
                services.job_cancel(job_id=job.id)
            except services.JobAlreadyFinished as exc:
                self.message_user(request, str(exc), messages.WARNING)
            else:
                cancelled += 1
        if cancelled:
            self.message_user(request, f"Cancelled {cancelled} job{'s' if cancelled != 1 else ''}.", messages.SUCCESS)
        return self.action_response(request)
