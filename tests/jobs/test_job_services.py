"""Job lifecycle: guarded transitions, monotonic progress, admission. The
job platform is tested on kinds of its own: it knows no documents."""

import itertools

import pytest

from common.models import StatusChange
from jobs import registry, services
from jobs.models import Job

pytestmark = [pytest.mark.unit, pytest.mark.django_db]

LIMITED, UNLIMITED = "test_limited", "test_unlimited"
JOB_STATUSES = [choice for choice, _ in Job.Status.choices]


@pytest.fixture
def started(monkeypatch):
    """Two kinds of job whose admission is recorded instead of dispatching
    Celery tasks."""
    runs: list[int] = []
    for kind, limited in ((LIMITED, True), (UNLIMITED, False)):
        monkeypatch.setitem(
            registry._handlers,
            kind,
            registry.JobKindHandler(label=kind, run=lambda job: runs.append(job.id), limited=limited),
        )
    return runs


def create(django_capture_on_commit_callbacks, **kwargs):
    with django_capture_on_commit_callbacks(execute=True):
        return services.job_create(kind=kwargs.pop("kind", LIMITED), project_id=1, **kwargs)


def test_a_new_job_is_started_when_a_slot_is_free(started, django_capture_on_commit_callbacks):
    job = create(django_capture_on_commit_callbacks)
    job.refresh_from_db()
    assert job.status == "running"
    assert job.started_at is not None
    assert started == [job.id]


def test_jobs_beyond_the_limit_wait_pending_and_start_in_order(started, settings, django_capture_on_commit_callbacks):
    settings.MIRAGE_MAX_CONCURRENT_INDEXING_JOBS = 2
    jobs = [create(django_capture_on_commit_callbacks) for _ in range(4)]
    statuses = [Job.objects.get(id=job.id).status for job in jobs]
    assert statuses == ["running", "running", "pending", "pending"]

    with django_capture_on_commit_callbacks(execute=True):
        services.job_complete(job_id=jobs[1].id)

    statuses = [Job.objects.get(id=job.id).status for job in jobs]
    assert statuses == ["running", "completed", "running", "pending"]
    assert started == [jobs[0].id, jobs[1].id, jobs[2].id]


def test_unlimited_kinds_do_not_take_indexing_slots(started, settings, django_capture_on_commit_callbacks):
    settings.MIRAGE_MAX_CONCURRENT_INDEXING_JOBS = 1
    create(django_capture_on_commit_callbacks)
    unlimited = create(django_capture_on_commit_callbacks, kind=UNLIMITED)
    assert Job.objects.get(id=unlimited.id).status == "running"


def test_completed_job_cannot_run_again(started, django_capture_on_commit_callbacks):
    job = create(django_capture_on_commit_callbacks)
    assert services.job_complete(job_id=job.id)
    with pytest.raises(services.IllegalJobTransition, match="completed -> running"):
        services.job_transition(job_id=job.id, from_statuses="completed", to="running", actor="system")
    assert not services.job_fail(job_id=job.id, error_type="x", error_message="late failure")
    job.refresh_from_db()
    assert job.status == "completed"
    assert job.progress_percentage == 100


def test_progress_never_goes_backwards_and_stays_below_100_until_completed(started, django_capture_on_commit_callbacks):
    job = create(django_capture_on_commit_callbacks)
    services.job_set_progress(job_id=job.id, percentage=60, message="embedding 60/100 chunks")
    services.job_set_progress(job_id=job.id, percentage=40, message="embedding 40/100 chunks")
    services.job_set_progress(job_id=job.id, percentage=100)
    job.refresh_from_db()
    assert job.progress_percentage == 99
    services.job_complete(job_id=job.id)
    job.refresh_from_db()
    assert job.progress_percentage == 100


def test_failed_job_keeps_its_progress_and_records_the_error(started, django_capture_on_commit_callbacks):
    job = create(django_capture_on_commit_callbacks)
    services.job_set_progress(job_id=job.id, percentage=30)
    services.job_fail(job_id=job.id, error_type="parse_error", error_message="PDF is encrypted")
    job.refresh_from_db()
    assert (job.status, job.error_type, job.progress_percentage) == ("failed", "parse_error", 30)
    assert job.completed_at is not None


def test_cancelling_a_finished_job_is_refused_with_the_reason(started, django_capture_on_commit_callbacks):
    job = create(django_capture_on_commit_callbacks)
    services.job_complete(job_id=job.id)
    with pytest.raises(services.JobAlreadyFinished, match="already finished as completed"):
        services.job_cancel(job_id=job.id)


def test_cancelling_a_pending_job_sets_cancelled_at(started, settings, django_capture_on_commit_callbacks):
    settings.MIRAGE_MAX_CONCURRENT_INDEXING_JOBS = 0
    job = create(django_capture_on_commit_callbacks)
    assert Job.objects.get(id=job.id).status == "pending"
    services.job_cancel(job_id=job.id)
    job.refresh_from_db()
    assert job.status == "cancelled" and job.cancelled_at is not None


def test_progress_percentage_is_checked_by_the_database(started, django_capture_on_commit_callbacks):
    from django.db import IntegrityError, transaction

    job = create(django_capture_on_commit_callbacks)
    with pytest.raises(IntegrityError), transaction.atomic():
        Job.objects.filter(id=job.id).update(progress_percentage=101)
    with pytest.raises(IntegrityError), transaction.atomic():
        Job.objects.filter(id=job.id).update(status="done")


def test_running_jobs_past_the_timeout_fail_with_error_type_timeout(
    started, settings, django_capture_on_commit_callbacks
):
    from datetime import timedelta

    from django.utils import timezone

    job = create(django_capture_on_commit_callbacks)
    Job.objects.filter(id=job.id).update(started_at=timezone.now() - timedelta(hours=2))
    settings.MIRAGE_INDEXING_JOB_TIMEOUT_SECONDS = 3600
    assert services.jobs_fail_timed_out() == [job.id]
    job.refresh_from_db()
    assert (job.status, job.error_type) == ("failed", "timeout")


def test_finished_jobs_past_retention_are_purged_and_others_kept(started, settings, django_capture_on_commit_callbacks):
    from datetime import timedelta

    from django.utils import timezone

    old, recent, active = (create(django_capture_on_commit_callbacks) for _ in range(3))
    services.job_complete(job_id=old.id)
    services.job_complete(job_id=recent.id)
    Job.objects.filter(id=old.id).update(completed_at=timezone.now() - timedelta(days=40))
    settings.MIRAGE_JOB_RETENTION_DAYS = 30
    assert services.jobs_purge_finished() == 1
    assert set(Job.objects.values_list("id", flat=True)) == {recent.id, active.id}


LEGAL_JOB_MOVES = {(source, to) for to, sources in services.JOB_TRANSITIONS.items() for source in sources}


@pytest.mark.parametrize(
    ("source", "to"),
    [pair for pair in itertools.product(JOB_STATUSES, JOB_STATUSES) if pair not in LEGAL_JOB_MOVES],
)
def test_an_illegal_job_transition_raises_naming_the_job_and_both_statuses(
    started, source, to, django_capture_on_commit_callbacks
):
    job = create(django_capture_on_commit_callbacks)
    with pytest.raises(
        services.IllegalJobTransition, match=f"job {job.id}: illegal status transition {source} -> {to}"
    ):
        services.job_transition(job_id=job.id, from_statuses=source, to=to, actor="system")


def test_a_job_that_left_the_expected_status_is_not_moved(started, django_capture_on_commit_callbacks):
    job = create(django_capture_on_commit_callbacks)
    services.job_cancel(job_id=job.id, actor="user:7", reason="not needed")
    assert not services.job_complete(job_id=job.id)
    assert Job.objects.get(id=job.id).status == "cancelled"


def test_every_job_status_change_is_in_its_history_with_actor_and_reason(started, django_capture_on_commit_callbacks):
    job = create(django_capture_on_commit_callbacks, actor="user:3")
    services.job_fail(job_id=job.id, error_type="parse_error", error_message="PDF is encrypted")
    rows = list(StatusChange.objects.filter(entity="job", entity_id=job.id).order_by("id"))
    assert [(row.from_status, row.to_status, row.actor) for row in rows] == [
        ("", "pending", "user:3"),
        ("pending", "running", "system"),
        ("running", "failed", "worker"),
    ]
    assert rows[-1].reason == "parse_error: PDF is encrypted"
    assert all(row.job_id == job.id and row.project_id == 1 for row in rows)
