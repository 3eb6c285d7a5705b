import threading

import pytest

from documents.coalescing import Coalescer
from tests.support.waiting import wait_until

pytestmark = pytest.mark.unit


def run_concurrently(coalescer, items):
    results: dict[object, object] = {}
    barrier = threading.Barrier(len(items))

    def call(item):
        barrier.wait()
        try:
            results[item] = coalescer.submit(item)
        except Exception as exc:  # noqa: BLE001
            results[item] = exc

    threads = [threading.Thread(target=call, args=(item,)) for item in items]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)
    return results


def test_callers_that_arrive_while_a_batch_runs_share_the_next_one_and_get_their_own_results():
    calls: list[list[int]] = []

    def square_all(items):
        calls.append(list(items))
        if len(calls) == 1:
            # Hold the first batch until every other caller is waiting.
            wait_until(
                lambda: len(coalescer._waiting) == 15,
                timeout=30,
                interval=0.001,
                message="the other 15 callers waiting",
            )
        return [item * item for item in items]

    coalescer = Coalescer(square_all)
    results = run_concurrently(coalescer, list(range(1, 17)))

    assert results == {item: item * item for item in range(1, 17)}
    assert [len(call) for call in calls] == [1, 15]
    assert sorted(calls[0] + calls[1]) == list(range(1, 17))


def test_a_lone_caller_runs_its_item_at_once():
    coalescer = Coalescer(lambda items: [item + 1 for item in items])
    assert coalescer.submit(41) == 42
    assert coalescer.batches == 1


def test_a_failed_run_reaches_every_caller_of_its_batch_and_no_other():
    def fail_on_seven(items):
        if 7 in items:
            raise RuntimeError("seven")
        return items

    coalescer = Coalescer(fail_on_seven, max_batch=1)
    results = run_concurrently(coalescer, [5, 6, 7, 8])
    assert isinstance(results[7], RuntimeError)
    assert [results[item] for item in (5, 6, 8)] == [5, 6, 8]


def test_batches_never_exceed_the_maximum_and_every_item_runs_once():
    seen: list[int] = []

    def record(items):
        assert len(items) <= 3
        seen.extend(items)
        return items

    coalescer = Coalescer(record, max_batch=3)
    run_concurrently(coalescer, list(range(20)))
    assert sorted(seen) == list(range(20))
