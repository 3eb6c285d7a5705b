"""The operator's admin: pages load for staff only, actions go through the
services, filters select the right documents, lists cost a constant number
of queries, and the live progress feed tells the truth."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.contrib.messages import get_messages
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from documents import jobkinds
from documents.embeddings import get_embedder
from documents.models import Chunk, Document, Project
from jobs import services as job_services
from jobs.models import Job
from tests.admin.operators import make_operator
from tests.support.factories import make_project, make_user, markdown_document, submit_bytes

pytestmark = [pytest.mark.unit, pytest.mark.django_db]

DOCUMENTS = reverse("admin:documents_document_changelist")
DOCUMENT_PROGRESS = reverse("admin:documents_document_progress")
DOCUMENT_UPLOAD = reverse("admin:documents_document_upload")
JOBS = reverse("admin:jobs_job_changelist")
JOB_PROGRESS = reverse("admin:jobs_job_progress")


@pytest.fixture
def operator_client(client):
    client.force_login(make_operator())
    return client


def new_document(project: Project, name: str, chunk_statuses: tuple[str, ...] = (), **chunk_fields) -> Document:
    """A submitted document with chunks in the given statuses (arranged
    directly: the states a worker would leave behind)."""
    document = submit_bytes(project, f"# {name}\n\n{name} body text.\n".encode(), f"{name}.md").document
    Chunk.objects.bulk_create(
        [
            Chunk(
                document=document,
                position=position,
                content=f"{name} chunk {position}",
                content_sha256=f"{document.id:032x}{position:032x}",
                status=status,
                embedding=[0.1, 0.2, 0.3] if status in ("ready", "corrupted") else None,
                error="the provider rejected the input" if status == "error" else "",
                **chunk_fields,
            )
            for position, status in enumerate(chunk_statuses)
        ]
    )
    return document


def shown_ids(response) -> set[int]:
    return {document.id for document in response.context["cl"].result_list}


def message_texts(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def run_action(client, changelist: str, action: str, ids: list[int]):
    return client.post(changelist, {"action": action, "_selected_action": [str(i) for i in ids]})


# --- Access -------------------------------------------------------------------------


def test_staff_can_load_every_changelist_and_change_page(operator_client):
    project = make_project()
    document = new_document(project, "rivers", ("ready", "error", "processing"))
    job_services.job_set_task_ids(job_id=document.current_job_id, task_id="task-abc", chord_id="chord-def")
    pages = [
        reverse("admin:index"),
        reverse("admin:documents_project_changelist"),
        reverse("admin:documents_project_add"),
        reverse("admin:documents_project_change", args=[project.id]),
        DOCUMENTS,
        reverse("admin:documents_document_change", args=[document.id]),
        reverse("admin:documents_document_change", args=[document.id]) + "?chunk_status=error",
        DOCUMENT_UPLOAD,
        JOBS,
        reverse("admin:jobs_job_change", args=[document.current_job_id]),
    ]

    for page in pages:
        assert operator_client.get(page).status_code == 200, page


def test_non_staff_is_redirected_to_login(client):
    client.force_login(make_user(staff=False))
    document = new_document(make_project(), "private")

    for page in [
        DOCUMENTS,
        JOBS,
        DOCUMENT_UPLOAD,
        f"{DOCUMENT_PROGRESS}?ids={document.id}",
        f"{JOB_PROGRESS}?ids={document.current_job_id}",
    ]:
        response = client.get(page)
        assert response.status_code == 302, page
        assert response["Location"].startswith(reverse("admin:login")), page


def test_document_page_shows_its_history_as_timeline_current_job_and_flower_links(operator_client):
    document = new_document(make_project(), "timeline", ("ready",))
    job_services.job_set_task_ids(job_id=document.current_job_id, task_id="task-abc", chord_id="chord-def")

    response = operator_client.get(reverse("admin:documents_document_change", args=[document.id]))

    content = response.content.decode()
    # The timeline is the document's recorded history (common.StatusChange).
    timeline = response.context["timeline"]
    assert timeline and timeline[0]["to_status"] == "pending"
    assert 'id="mirage-timeline"' in content and timeline[0]["actor"] in content
    # The timeline is the document's history: who moved it where, and why.
    job_services.job_cancel(job_id=document.current_job_id, actor="operator:7", reason="cancelled in the admin")
    content = operator_client.get(reverse("admin:documents_document_change", args=[document.id])).content.decode()
    timeline = content[content.index("<h2>Timeline</h2>") : content.index("<h2>Current job</h2>")]
    assert "uploaded" in timeline and "system" in timeline
    assert "operator:7" in timeline and "cancelled in the admin" in timeline
    assert timeline.index("uploaded") < timeline.index("cancelled in the admin")
    assert reverse("admin:jobs_job_change", args=[document.current_job_id]) in content
    flower = settings.MIRAGE_FLOWER_URL.rstrip("/")
    assert f"{flower}/task/task-abc" in content
    assert f"{flower}/task/chord-def" in content


def test_document_page_lists_chunks_fifty_per_page_and_by_status(operator_client):
    statuses = ("ready",) * 57 + ("error",) * 3
    document = new_document(make_project(), "long", statuses)
    page_url = reverse("admin:documents_document_change", args=[document.id])

    first = operator_client.get(page_url)
    second = operator_client.get(page_url + "?chunk_page=2")
    failed = operator_client.get(page_url + "?chunk_status=error")

    assert [chunk.position for chunk in first.context["chunk_page"].object_list] == list(range(50))
    assert [chunk.position for chunk in second.context["chunk_page"].object_list] == list(range(50, 60))
    assert [chunk.position for chunk in failed.context["chunk_page"].object_list] == [57, 58, 59]
    assert "the provider rejected the input" in failed.content.decode()


def test_job_page_shows_the_traceback_in_pre(operator_client):
    document = new_document(make_project(), "broken")
    job_services.jobs_admit_pending()
    job_services.job_fail(
        job_id=document.current_job_id,
        error_type="parse_error",
        error_message="bad file",
        error_traceback="Traceback (most recent call last):\n  boom",
    )

    response = operator_client.get(reverse("admin:jobs_job_change", args=[document.current_job_id]))

    content = response.content.decode()
    assert '<pre class="mirage-pre">Traceback (most recent call last):\n  boom</pre>' in content
    assert "parse_error" in content


# --- Actions ------------------------------------------------------------------------


def test_cancel_action_cancels_a_running_job_and_its_document(operator_client):
    document = new_document(make_project(), "running")
    job_services.jobs_admit_pending()
    assert Job.objects.get(id=document.current_job_id).status == "running"

    response = run_action(operator_client, JOBS, "cancel_jobs", [document.current_job_id])

    assert response.status_code == 302
    assert Job.objects.get(id=document.current_job_id).status == "cancelled"
    assert Document.objects.get(id=document.id).status == "cancelled"
    assert "Cancelled 1 job." in message_texts(response)


def test_cancel_action_reports_a_job_that_already_finished(operator_client):
    document = new_document(make_project(), "finished")
    job_services.job_cancel(job_id=document.current_job_id)

    response = run_action(operator_client, JOBS, "cancel_jobs", [document.current_job_id])

    assert any("already finished as cancelled" in text for text in message_texts(response))


def test_document_cancel_action_cancels_its_current_job(operator_client):
    document = new_document(make_project(), "to-cancel")

    response = run_action(operator_client, DOCUMENTS, "cancel_documents", [document.id])

    assert Job.objects.get(id=document.current_job_id).status == "cancelled"
    assert "Cancelled the jobs of 1 document." in message_texts(response)


def test_retry_action_reports_a_busy_document_and_starts_nothing(operator_client):
    document = new_document(make_project(), "busy", ("error",))

    response = run_action(operator_client, DOCUMENTS, "retry_failed_chunks", [document.id])

    assert any("busy.md: document" in text and "already has job" in text for text in message_texts(response))
    assert Job.objects.filter(subject_id=document.id).count() == 1


def test_retry_action_queues_a_retry_job_for_an_idle_document(operator_client):
    document = new_document(make_project(), "idle", ("ready", "error"))
    job_services.job_cancel(job_id=document.current_job_id)

    response = run_action(operator_client, DOCUMENTS, "retry_failed_chunks", [document.id])

    retry = Job.objects.get(subject_id=document.id, kind=jobkinds.RETRY_CHUNKS)
    assert Document.objects.get(id=document.id).current_job_id == retry.id
    assert "Queued a retry of failed chunks for 1 document." in message_texts(response)


def test_reindex_action_queues_a_reindex_and_reports_busy_ones(operator_client):
    project = make_project()
    idle = new_document(project, "idle-one")
    job_services.job_cancel(job_id=idle.current_job_id)
    busy = new_document(project, "busy-one")

    response = run_action(operator_client, DOCUMENTS, "reindex_documents", [idle.id, busy.id])

    assert Job.objects.filter(subject_id=idle.id, kind=jobkinds.REINDEX_DOCUMENT).count() == 1
    assert not Job.objects.filter(subject_id=busy.id, kind=jobkinds.REINDEX_DOCUMENT).exists()
    texts = message_texts(response)
    assert "Queued a reindex of 1 document." in texts
    assert any(text.startswith("busy-one.md: ") for text in texts)


def test_action_started_from_a_document_page_returns_to_it(operator_client):
    document = new_document(make_project(), "return")
    page = reverse("admin:documents_document_change", args=[document.id])

    response = operator_client.post(
        DOCUMENTS, {"action": "cancel_documents", "_selected_action": [document.id], "_return_to": page}
    )

    assert response.status_code == 302
    assert response["Location"] == page


def test_staff_without_change_permission_cannot_run_actions(client):
    viewer = make_user(staff=True)
    viewer.user_permissions.add(*_permissions("view_document"))
    client.force_login(viewer)
    document = new_document(make_project(), "viewer")

    run_action(client, DOCUMENTS, "cancel_documents", [document.id])

    assert Job.objects.get(id=document.current_job_id).status == "pending"


# --- Filters ------------------------------------------------------------------------


def test_stuck_filter_selects_documents_with_a_processing_chunk_past_its_lease(operator_client):
    project = make_project()
    now = timezone.now()
    stuck = new_document(project, "stuck", ("ready", "processing"), lease_expires_at=now - timedelta(minutes=5))
    working = new_document(project, "working", ("processing",), lease_expires_at=now + timedelta(minutes=5))
    done = new_document(project, "done", ("ready", "error"))

    assert shown_ids(operator_client.get(DOCUMENTS + "?stuck=yes")) == {stuck.id}
    assert shown_ids(operator_client.get(DOCUMENTS + "?stuck=no")) == {working.id, done.id}


def test_has_failed_chunks_filter_selects_documents_with_an_error_chunk(operator_client):
    project = make_project()
    failed = new_document(project, "failed", ("ready", "error", "error"))
    clean = new_document(project, "clean", ("ready", "corrupted"))
    empty = new_document(project, "empty")

    assert shown_ids(operator_client.get(DOCUMENTS + "?has_failed_chunks=yes")) == {failed.id}
    assert shown_ids(operator_client.get(DOCUMENTS + "?has_failed_chunks=no")) == {clean.id, empty.id}


def test_filtered_changelist_keeps_the_true_chunk_counts(operator_client):
    document = new_document(make_project(), "counted", ("ready", "error", "error", "pending"))

    response = operator_client.get(DOCUMENTS + "?has_failed_chunks=yes")

    (shown,) = response.context["cl"].result_list
    assert (shown.id, shown.chunks_total, shown.chunks_processed, shown.chunks_error) == (document.id, 4, 3, 2)
    assert "3/4 chunks · 75%" in response.content.decode()


def test_changelist_runs_the_same_number_of_queries_for_5_and_30_documents(operator_client):
    project = make_project()
    for index in range(5):
        new_document(project, f"doc-{index}", ("ready", "error", "processing"))
    with CaptureQueriesContext(connection) as five:
        assert operator_client.get(DOCUMENTS).status_code == 200
    for index in range(5, 30):
        new_document(project, f"doc-{index}", ("ready", "error", "processing"))
    with CaptureQueriesContext(connection) as thirty:
        response = operator_client.get(DOCUMENTS)

    assert len(response.context["cl"].result_list) == 30
    assert len(thirty) == len(five), [query["sql"] for query in thirty.captured_queries]


def test_job_changelist_runs_the_same_number_of_queries_for_5_and_30_jobs(operator_client):
    project = make_project()
    for index in range(5):
        new_document(project, f"job-{index}")
    with CaptureQueriesContext(connection) as five:
        assert operator_client.get(JOBS).status_code == 200
    for index in range(5, 30):
        new_document(project, f"job-{index}")
    with CaptureQueriesContext(connection) as thirty:
        assert operator_client.get(JOBS).status_code == 200

    assert len(thirty) == len(five)


# --- The live progress feed ------------------------------------------------------------


def test_progress_endpoint_returns_status_and_chunk_progress_of_the_asked_documents(operator_client):
    project = make_project()
    half = new_document(project, "half", ("ready", "error", "processing", "pending"))
    other = new_document(project, "other", ("ready",))

    response = operator_client.get(f"{DOCUMENT_PROGRESS}?ids={half.id},999999999,not-an-id")

    assert response.status_code == 200
    items = response.json()["items"]
    assert set(items) == {str(half.id)}
    item = items[str(half.id)]
    assert item["status"] == "pending"
    assert item["final"] is False
    assert item["percent"] == 50
    assert item["label"] == "2/4 chunks · 50%"
    assert item["fields"]["chunks_total"] == 4
    assert item["fields"]["chunks_error"] == 1
    assert item["fields"]["current_job_id"] == half.current_job_id
    assert str(other.id) not in items


def test_progress_endpoint_runs_one_query_for_any_number_of_documents(operator_client):
    project = make_project()
    documents = [new_document(project, f"many-{index}", ("ready", "pending")) for index in range(12)]
    operator_client.get(f"{DOCUMENT_PROGRESS}?ids={documents[0].id}")

    with CaptureQueriesContext(connection) as one:
        operator_client.get(f"{DOCUMENT_PROGRESS}?ids={documents[0].id}")
    with CaptureQueriesContext(connection) as twelve:
        response = operator_client.get(f"{DOCUMENT_PROGRESS}?ids={','.join(str(d.id) for d in documents)}")

    assert len(response.json()["items"]) == 12
    assert len(twelve) == len(one)


def test_job_progress_endpoint_returns_job_progress(operator_client):
    document = new_document(make_project(), "job-progress")
    job_services.jobs_admit_pending()
    job_services.job_set_progress(job_id=document.current_job_id, percentage=42, message="embedding 4/10 chunks")

    response = operator_client.get(f"{JOB_PROGRESS}?ids={document.current_job_id}")

    item = response.json()["items"][str(document.current_job_id)]
    assert (item["status"], item["percent"], item["final"]) == ("running", 42, False)
    assert item["fields"]["progress_message"] == "embedding 4/10 chunks"


def test_progress_endpoint_refuses_staff_without_view_permission(client):
    client.force_login(make_user(staff=True))
    document = new_document(make_project(), "hidden")

    response = client.get(f"{DOCUMENT_PROGRESS}?ids={document.id}")

    assert response.status_code == 403
    assert "items" not in response.json()


def test_progress_endpoint_refuses_anonymous_users(client):
    document = new_document(make_project(), "anonymous")

    response = client.get(f"{DOCUMENT_PROGRESS}?ids={document.id}")

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


# --- Upload and projects -------------------------------------------------------------------


def test_upload_page_submits_the_file_and_opens_its_document(operator_client):
    project = make_project()
    upload = SimpleUploadedFile("guide.md", markdown_document(sections=2), content_type="text/markdown")

    response = operator_client.post(DOCUMENT_UPLOAD, {"project": project.id, "file": upload})

    document = Document.objects.get(project=project, filename="guide.md")
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:documents_document_change", args=[document.id])
    assert Job.objects.get(id=document.current_job_id).kind == jobkinds.INDEX_DOCUMENT


def test_upload_page_shows_why_a_file_is_refused(operator_client):
    project = make_project()
    upload = SimpleUploadedFile("empty.md", b"", content_type="text/markdown")

    response = operator_client.post(DOCUMENT_UPLOAD, {"project": project.id, "file": upload})

    assert response.status_code == 200
    assert not Document.objects.filter(project=project).exists()
    assert response.context["form"].errors["file"]


def test_upload_page_refuses_staff_without_add_permission(client):
    viewer = make_user(staff=True)
    viewer.user_permissions.add(*_permissions("view_document"))
    client.force_login(viewer)

    assert client.get(DOCUMENT_UPLOAD).status_code == 403


def test_project_created_in_admin_pins_its_embedding_model_through_the_service(operator_client):
    member = make_user()

    response = operator_client.post(
        reverse("admin:documents_project_add"), {"name": "from-admin", "embedder": "hash", "members": [member.id]}
    )

    assert response.status_code == 302
    project = Project.objects.get(name="from-admin")
    hashing = get_embedder("hash")
    assert (project.embedder, project.embedding_model, project.embedding_dimensions) == (
        "hash",
        hashing.model_id,
        hashing.dimensions,
    )
    assert list(project.members.all()) == [member]


def test_project_embedder_cannot_be_changed_after_creation(operator_client):
    project = make_project(embedder="hash")

    operator_client.post(
        reverse("admin:documents_project_change", args=[project.id]),
        {"name": "renamed", "embedder": "local", "embedding_model": "other", "embedding_dimensions": 3, "members": []},
    )

    project.refresh_from_db()
    assert project.name == "renamed"
    assert (project.embedder, project.embedding_dimensions) == ("hash", get_embedder("hash").dimensions)


def test_project_page_and_job_list_show_an_embedder_migration_and_how_it_ended(operator_client):
    from documents import services

    project = make_project(embedder="hash")
    job = services.project_embedder_migrate(project=project, embedder="local")
    job_services.jobs_admit_pending()
    job_services.job_set_progress(job_id=job.id, percentage=40, message="embedding 40/100 chunks")
    page = reverse("admin:documents_project_change", args=[project.id])
    job_url = reverse("admin:jobs_job_change", args=[job.id])

    shown = operator_client.get(page).content.decode()
    assert "moving to sentence-transformers/all-MiniLM-L6-v2 (384 dimensions)" in shown
    assert f'<a href="{job_url}">job {job.id}</a>, running, 40% (embedding 40/100 chunks)' in shown
    assert "searches use hash-384 until the switch" in shown
    listed = operator_client.get(JOBS).content.decode()
    assert "Change the embedding model" in listed and "hash-384 -&gt; sentence-transformers" in listed

    job_services.job_cancel(job_id=job.id, reason="not now")
    shown = operator_client.get(page).content.decode()
    assert f'last migration: <a href="{job_url}">job {job.id}</a>, cancelled' in shown
    assert "moving to" not in shown


def test_project_with_an_unknown_embedder_is_refused(operator_client):
    response = operator_client.post(
        reverse("admin:documents_project_add"), {"name": "bad", "embedder": "no.such.Embedder"}
    )

    assert response.status_code == 200
    assert "cannot use embedder" in str(response.context["adminform"].form.errors["embedder"])
    assert not Project.objects.filter(name="bad").exists()


def _permissions(*codenames: str):
    from django.contrib.auth.models import Permission

    return Permission.objects.filter(codename__in=codenames)


def test_a_project_name_already_used_in_the_admin_is_refused_with_a_message_not_a_500(operator_client):
    make_project(name="twice")
    response = operator_client.post(reverse("admin:documents_project_add"), {"name": "twice", "embedder": "hash"})
    assert response.status_code == 200
    assert "A project without an owner already has this name." in response.content.decode()
    assert Project.objects.filter(name="twice").count() == 1
