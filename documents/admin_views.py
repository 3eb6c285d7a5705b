"""Admin pages for documents beyond the model pages: the live progress feed
the changelist and change page poll, and the upload form. Both are mounted
by DocumentAdmin.get_urls behind `admin_site.admin_view` (staff only)."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.template.response import TemplateResponse
from django.urls import reverse

from common import history
from common.admin_widgets import display_value, live_ids
from documents import selectors, services
from documents.models import Document, Project
from documents.parsers import UnsupportedFileType
from jobs.models import Job

TIMELINE_FIELDS = [
    ("created_at", "Uploaded"),
    ("parsing_started_at", "Parsing started"),
    ("parsing_finished_at", "Parsing finished"),
    ("embedding_finished_at", "Embedding finished"),
    ("indexed_at", "Indexed"),
]


TIMELINE_ENTRIES = 200


def document_timeline(document: Document) -> list[dict]:
    """The document's history (common.StatusChange), oldest first: when, how
    long after the upload, from and to which status, who and why."""
    from common.api import history_of

    return [
        {
            "at": display_value(change.at),
            "elapsed": _elapsed(document.created_at, change.at),
            "from_status": change.from_status,
            "to_status": change.to_status,
            "actor": change.actor,
            "reason": change.reason,
            "job_id": change.job_id,
        }
        for change in history_of(entity="document", entity_id=document.id)[:TIMELINE_ENTRIES]
    ]


def _elapsed(start, moment) -> str:
    seconds = max(0.0, (moment - start).total_seconds())
    if seconds < 120:
        return f"+{seconds:.1f} s"
    minutes, seconds = divmod(int(seconds), 60)
    return f"+{minutes} min {seconds} s" if minutes < 120 else f"+{minutes // 60} h {minutes % 60} min"


def timeline_elapsed(document: Document, field: str) -> str:
    """How long after the upload a step happened ("+2.4 s"), or "" before it has."""
    moment = getattr(document, field)
    if moment is None or field == "created_at":
        return ""
    return _elapsed(document.created_at, moment)


def document_progress_label(document: Document) -> str:
    """What the progress bar says, for an annotated document."""
    total = document.chunks_total
    if total == 0:
        if document.status == Document.Status.PENDING:
            return "waiting"
        if document.status == Document.Status.INDEXING:
            return "parsing"
        return "no chunks"
    return f"{document.chunks_processed}/{total} chunks · {selectors.progress_percent(document)}%"


def document_job_state(document: Document) -> dict | None:
    """What the document page's job panel shows of the current job, from the
    document's own chunk counts: the job row's percentage is counted another
    way and at other moments, and two numbers for one run disagree."""
    job = document.current_job
    if job is None:
        return None
    if job.is_final:
        message = job.progress_message if job.status == Job.Status.COMPLETED else job.error_message
        message = message or job.progress_message
    elif job.status == Job.Status.PENDING:
        message = "waiting for a free indexing slot"
    elif document.chunks_total == 0:
        message = "parsing"
    else:
        message = f"embedding {document.chunks_processed}/{document.chunks_total} chunks"
    return {
        "id": job.id,
        "status": job.status,
        "final": job.is_final,
        "percent": selectors.progress_percent(document),
        "label": document_progress_label(document),
        "fields": {"message": display_value(message)},
    }


def document_job_active(document: Document) -> bool:
    job = document.current_job
    return job is not None and job.status in Job.ACTIVE_STATUSES


def document_actions(document: Document) -> list[tuple[str, str]]:
    """The actions that can apply to an annotated document now, as (admin
    action, button label): the page offers no button the service would
    refuse (DocumentBusy, NothingToRetry, a finished job)."""
    if document_job_active(document):
        return [("cancel_documents", "Cancel job")]
    counts = selectors.chunk_counts_of(document)
    actions = []
    # What services.retry_statuses re-embeds: failed chunks and those a
    # stopped run left pending; truncated ones only when asked.
    if counts["error"] or counts["pending"]:
        actions.append(("retry_failed_chunks", "Retry failed chunks"))
    if counts["corrupted"]:
        actions.append(("retry_failed_and_truncated_chunks", "Retry failed and truncated chunks"))
    actions.append(("reindex_documents", "Reindex"))
    return actions


def chunks_notice(document: Document, *, chunk_status: str = "") -> str:
    """What the Chunks panel says when it lists no chunk."""
    if chunk_status and document.chunks_total:
        return f"No chunk in status {chunk_status}."
    if document.chunks_total:
        return ""
    if document.status == Document.Status.PENDING:
        return "No chunks yet: the document waits for its job to start; this list fills in once it is parsed."
    if document.status == Document.Status.INDEXING:
        return "No chunks yet: the file is being parsed; this list fills in when parsing has finished."
    reason = document.error_message or (
        "it was cancelled before parsing finished" if document.status == Document.Status.CANCELLED else ""
    )
    if document.status in (Document.Status.ERROR, Document.Status.CANCELLED):
        return f"No chunks: the document ended {document.status}" + (f": {reason}" if reason else ".")
    return "No chunks: the file holds no text to index."


def refresh_key(document: Document) -> str:
    """Changes when the document page's panels (timeline, job, chunk list,
    actions) must be drawn again: a status change, parsing storing the
    chunks, a new job or the job's status."""
    job = document.current_job
    return "|".join(
        str(part)
        for part in (document.status, document.chunks_total, document.current_job_id, job.status if job else "")
    )


def document_live_state(document: Document) -> dict:
    """What the live pages show of an annotated document (see
    selectors.documents_with_progress), its current job included, so one
    answer updates every panel of the document page at once."""
    counts = selectors.chunk_counts_of(document)
    job = document_job_state(document)
    return {
        "status": document.status,
        "final": document.status in Document.FINAL_STATUSES and (job is None or job["final"]),
        "percent": selectors.progress_percent(document),
        "label": document_progress_label(document),
        "refresh_key": refresh_key(document),
        "job": job,
        "fields": {
            "error_message": display_value(document.error_message),
            "chunks_total": document.chunks_total,
            "chunks_processed": document.chunks_processed,
            **{f"chunks_{status}": count for status, count in counts.items()},
            **{field: display_value(getattr(document, field)) for field, _ in TIMELINE_FIELDS},
            **{f"{field}_elapsed": timeline_elapsed(document, field) for field, _ in TIMELINE_FIELDS},
            "current_job_id": document.current_job_id,
        },
    }


def document_progress(request: HttpRequest, *, model_admin) -> JsonResponse:
    """Status and progress of `?ids=...` documents, in one query however many."""
    if not model_admin.has_view_permission(request):
        return JsonResponse({"error": "permission denied"}, status=403)
    documents = selectors.documents_with_progress(Document.objects.filter(id__in=live_ids(request)))
    return JsonResponse({"items": {str(document.id): document_live_state(document) for document in documents}})


class UploadForm(forms.Form):
    project = forms.ModelChoiceField(queryset=Project.objects.all())
    file = forms.FileField(help_text="Markdown, PDF, EPUB, HTML or plain text.")
    priority = forms.ChoiceField(
        choices=Job.Priority.choices,
        initial=Job.Priority.NORMAL,
        required=False,
        help_text="High-priority work is indexed before waiting normal work.",
    )


def document_upload(request: HttpRequest, *, model_admin) -> HttpResponse:
    """Store a file through services.document_submit and open its page."""
    if not model_admin.has_upload_permission(request):
        raise PermissionDenied
    form = UploadForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        upload = form.cleaned_data["file"]
        try:
            submission = services.document_submit(
                project=form.cleaned_data["project"],
                source=upload,
                filename=upload.name,
                priority=form.cleaned_data["priority"] or Job.Priority.NORMAL,
                actor=history.operator_actor(request.user),
            )
        except (services.UploadRejected, UnsupportedFileType) as exc:
            form.add_error("file", str(exc))
        else:
            document = submission.document
            if submission.created:
                messages.success(request, f"Uploaded {document.filename}; indexing job {submission.job.id} queued.")
            else:
                messages.warning(
                    request, f"{document.project} already holds this file as {document.filename}; nothing started."
                )
            return HttpResponseRedirect(
                reverse("admin:documents_document_change", args=[document.id], current_app=model_admin.admin_site.name)
            )
    opts = model_admin.opts
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": opts,
        "title": "Upload document",
        "form": form,
        "media": model_admin.media + form.media,
        "has_view_permission": model_admin.has_view_permission(request),
    }
    return TemplateResponse(request, "admin/documents/document/upload.html", context)
