"""Admission order: priority first, then fair share across projects (round
robin), then age; paused projects wait. Tested on kinds of the job platform's
own, like tests/jobs/test_job_services.py."""

import pytest

from common import pauses
from jobs import registry, services
from jobs.models import Job

pytestmark = [pytest.mark.unit, pytest.mark.django_db]

KIND = "test_admitted"


@pytest.fixture
def started(monkeypatch, settings):
    runs: list[int] = []
    monkeypatch.setitem(
        registry._handlers, KIND, registry.JobKindHandler(label=KIND, run=lambda job: runs.append(job.id))
    )
    return runs


def queue(*, project_id: int, priority: str = "normal") -> Job:
    # Created outside on_commit admission: the test admits when it chooses.
    return services.job_create(kind=KIND, project_id=project_id, priority=priority)


def statuses(jobs) -> list[str]:
    return [Job.objects.get(id=job.id).status for job in jobs]


def test_a_project_with_nothing_running_is_served_before_a_projects_backlog(started, settings):
    settings.MIRAGE_MAX_CONCURRENT_INDEXING_JOBS = 2
    backlog = [queue(project_id=1) for _ in range(5)]
    late = queue(project_id=2)

    assert services.jobs_admit_pending() == [backlog[0].id, late.id]
    # Project 2's job ends: project 1 has one running, project 3 none.
    services.job_transition(
        job_id=late.id, from_statuses="running", to="completed", actor="system", progress_percentage=100
    )
    newcomer = queue(project_id=3)
    assert services.jobs_admit_pending() == [newcomer.id]
    # Project 1's job ends: it has none running now, project 3 one.
    services.job_transition(
        job_id=backlog[0].id, from_statuses="running", to="completed", actor="system", progress_percentage=100
    )
    assert services.jobs_admit_pending() == [backlog[1].id]


def test_high_priority_overtakes_waiting_normal_and_low_work(started, settings):
    settings.MIRAGE_MAX_CONCURRENT_INDEXING_JOBS = 1
    low = queue(project_id=1, priority="low")
    normal = [queue(project_id=1) for _ in range(3)]
    high = queue(project_id=1, priority="high")

    order = []
    for _ in range(5):
        (admitted,) = services.jobs_admit_pending()
        order.append(admitted)
        services.job_transition(
            job_id=admitted, from_statuses="running", to="completed", actor="system", progress_percentage=100
        )
    assert order == [high.id, *(job.id for job in normal), low.id]


def test_jobs_of_a_paused_project_or_deployment_wait(started, settings):
    settings.MIRAGE_MAX_CONCURRENT_INDEXING_JOBS = 4
    held = queue(project_id=1, priority="high")
    free = queue(project_id=2)
    pauses.pause_begin(project_id=1, reason="hold", actor="system")
    assert services.jobs_admit_pending() == [free.id]
    pauses.pause_begin(project_id=None, reason="everything", actor="system")
    other = queue(project_id=2)
    assert services.jobs_admit_pending() == []
    pauses.pause_end(project_id=None, actor="system")
    pauses.pause_end(project_id=1, actor="system")
    assert services.jobs_admit_pending() == [held.id, other.id]
    assert statuses([held, free, other]) == ["running"] * 3
