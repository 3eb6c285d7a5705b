from __future__ import annotations

import contextlib
from collections.abc import Iterator

from django.db import connection


@contextlib.contextmanager
def try_advisory_lock(name: str) -> Iterator[bool]:
    """Yield whether this session got the named PostgreSQL advisory lock.

    Two beat ticks (or two beat processes) running the same reconciler: the
    second sees False and skips, instead of repeating the first one's repairs.
    """
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(hashtext(%s))", [name])
        acquired = cursor.fetchone()[0]
    try:
        yield acquired
    finally:
        if acquired:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(hashtext(%s))", [name])
