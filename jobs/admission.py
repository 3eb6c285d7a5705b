"""Which pending jobs start next, and which running jobs a timeout may end.

Admission order:
1. priority: every waiting `high` job before any `normal`, every `normal`
   before any `low`;
2. fair share across projects, round robin: a project's k-th waiting job
   ranks as (its project's running jobs + k), so a project with nothing
   running is served at the next free slot however many jobs another
   project queued;
3. age, oldest first.

Jobs of a paused project (or of a paused deployment) are not admitted; they
stay `pending` until the pause ends. One statement, no per-project queue:
thousands of projects cost one window function over the pending jobs.
"""

from __future__ import annotations

from django.db import connection

from common.pauses import PAUSED_SQL
from jobs import registry

PRIORITY_RANK_SQL = "CASE {column} WHEN 'high' THEN 0 WHEN 'normal' THEN 1 ELSE 2 END"

_CANDIDATES_SQL = f"""
WITH running AS (
    SELECT project_id, count(*) AS n FROM jobs_job
     WHERE status = 'running' AND kind = ANY(%(kinds)s)
     GROUP BY project_id
), waiting AS (
    SELECT j.id, j.project_id, j.created_at, {PRIORITY_RANK_SQL.format(column="j.priority")} AS rank,
           row_number() OVER (PARTITION BY j.project_id, j.priority ORDER BY j.created_at, j.id) AS turn
      FROM jobs_job AS j
     WHERE j.status = 'pending' AND j.kind = ANY(%(kinds)s) AND NOT {PAUSED_SQL.format(project_id="j.project_id")}
)
SELECT w.id FROM waiting AS w LEFT JOIN running AS r ON r.project_id IS NOT DISTINCT FROM w.project_id
 ORDER BY w.rank, COALESCE(r.n, 0) + w.turn, w.created_at, w.id
 LIMIT %(limit)s
"""

_UNLIMITED_SQL = f"""
SELECT j.id FROM jobs_job AS j
 WHERE j.status = 'pending' AND NOT (j.kind = ANY(%(kinds)s)) AND NOT {PAUSED_SQL.format(project_id="j.project_id")}
 ORDER BY {PRIORITY_RANK_SQL.format(column="j.priority")}, j.created_at, j.id
"""


def admission_candidates(*, limited_kinds: list[str], free: int) -> list[int]:
    """Ids of the pending jobs to start now, in order: up to `free` jobs of
    the limited kinds, then every pending job of the other kinds (those take
    no slot); paused projects' jobs are left waiting."""
    with connection.cursor() as cursor:
        ids: list[int] = []
        if free > 0:
            cursor.execute(_CANDIDATES_SQL, {"kinds": limited_kinds, "limit": free})
            ids = [row[0] for row in cursor.fetchall()]
        cursor.execute(_UNLIMITED_SQL, {"kinds": limited_kinds})
        return ids + [row[0] for row in cursor.fetchall()]


_TIMED_OUT_SQL = f"""
SELECT j.id FROM jobs_job AS j
 WHERE j.status = 'running' AND j.kind = ANY(%(kinds)s)
   AND j.started_at + make_interval(secs => COALESCE((j.metadata ->> 'paused_seconds')::float, 0)) < %(cutoff)s
   AND NOT {PAUSED_SQL.format(project_id="j.project_id")}
"""


def timed_out_candidates(*, cutoff) -> list[int]:
    """Running jobs of the kinds that time out (jobs.registry) that started
    before `cutoff`, not counting the time they spent paused (metadata
    `paused_seconds`), and not paused now: a pause stops a job's clock."""
    with connection.cursor() as cursor:
        cursor.execute(_TIMED_OUT_SQL, {"cutoff": cutoff, "kinds": registry.timed_kinds()})
        return [row[0] for row in cursor.fetchall()]
