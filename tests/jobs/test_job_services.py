"""Job lifecycle: guarded transitions, monotonic progress, admission."""
import pytest

from jobs import registry, services
from jobs.models import Job

pytestmark = [pytest.mark.unit, pytest.mark.django_db]


@pytest.fixture
def started(monkeypatch):
    """Record what admission starts instead of dispatching Celery tasks."""
    runs: list[int] = []
    for kind in Job.Kind.values:
        original = registry.handler_for(kind)
        monkeypatch.setitem(
            registry._handlers,
            kind,
            registry.JobKindHandler(run=lambda job: runs.append(job.id), cancel=None, limited=original.limited),
        )
    return runs


def create(django_capture_on_commit_callbacks, **kwargs):
    with django_capture_on_commit_callbacks(execute=True):
        return services.job_create(kind=kwargs.pop("kind", Job.Kind.INDEX_DOCUMENT), project_id=1, **kwargs)


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


def test_import_jobs_do_not_take_indexing_slots(started, settings, django_capture_on_commit_callbacks):
    settings.MIRAGE_MAX_CONCURRENT_INDEXING_JOBS = 1
    create(django_capture_on_commit_callbacks)
    imported = create(django_capture_on_commit_callbacks, kind=Job.Kind.IMPORT_DIRECTORY)
    assert Job.objects.get(id=imported.id).status == "running"


def test_completed_job_cannot_run_again(started, django_capture_on_commit_callbacks):
    job = create(django_capture_on_commit_callbacks)
    assert services.job_complete(job_id=job.id)
    assert not services._transition(job_id=job.id, to=Job.Status.RUNNING)
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


def test_running_jobs_past_the_timeout_fail_with_error_type_timeout(started, settings, django_capture_on_commit_callbacks):
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
