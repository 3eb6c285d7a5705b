"""The soak's figures: throughput per tenth from cumulative samples, medians
of the first and last stretch, percentiles, and the shapes of Redis keys
that tell what finished documents leave behind."""

import pytest

from bench.soak import figures

pytestmark = pytest.mark.unit


def test_rates_by_part_reads_a_steady_counter_as_a_steady_rate():
    samples = [(float(second), 10.0 * second) for second in range(0, 101, 10)]
    assert figures.rates_by_part(samples, 0.0, 100.0, 10) == pytest.approx([10.0] * 10)


def test_rates_by_part_interpolates_between_samples_and_shows_a_slowdown():
    # 20 units/s for 50 s, then 5 units/s; samples every 25 s only.
    samples = [(0.0, 0.0), (25.0, 500.0), (50.0, 1000.0), (75.0, 1125.0), (100.0, 1250.0)]
    rates = figures.rates_by_part(samples, 0.0, 100.0, 10)
    assert rates[0] == pytest.approx(20.0)
    assert rates[-1] == pytest.approx(5.0)
    assert figures.ratio(rates[-1], rates[0]) == pytest.approx(0.25)


def test_rates_by_part_counts_only_the_window_asked_for():
    samples = [(0.0, 0.0), (10.0, 0.0), (20.0, 100.0), (30.0, 100.0)]
    assert figures.rates_by_part(samples, 10.0, 20.0, 2) == pytest.approx([10.0, 10.0])


def test_rates_by_part_without_a_window_or_samples_is_empty():
    assert figures.rates_by_part([(0.0, 0.0), (1.0, 5.0)], 5.0, 5.0) == []
    assert figures.rates_by_part([(0.0, 0.0)], 0.0, 1.0) == []


def test_ratio_is_none_without_both_figures_or_with_a_zero_baseline():
    assert figures.ratio(3.0, 2.0) == 1.5
    assert figures.ratio(None, 2.0) is None
    assert figures.ratio(3.0, 0.0) is None


def test_first_and_last_quarters_take_the_median_of_their_own_samples():
    points = [(0.0, 100.0), (10.0, 300.0), (20.0, 200.0), (50.0, 999.0), (80.0, 110.0), (90.0, 130.0), (100.0, 120.0)]
    first, last = figures.first_and_last(points, 0.0, 100.0, 0.25)
    assert (first, last) == (200.0, 120.0)
    assert figures.ratio(last, first) == pytest.approx(0.6)


def test_a_quarter_without_samples_has_no_median():
    assert figures.first_and_last([(50.0, 1.0)], 0.0, 100.0, 0.25) == (None, None)


def test_percentile_interpolates_and_is_none_without_values():
    values = [float(value) for value in range(1, 101)]
    assert figures.percentile(values, 0.95) == pytest.approx(95.05)
    assert figures.percentile([0.2], 0.95) == 0.2
    assert figures.percentile([], 0.95) is None


def test_key_shape_cuts_the_prefix_and_writes_ids_as_placeholders():
    prefix = "mirage-mirage_soak-0a1b2c3d:"
    assert figures.key_shape(prefix + "rank:document:418:1", prefix) == "rank:document:#:#"
    assert (
        figures.key_shape(prefix + "celery-task-meta-6f1c2a9e-1b2c-4d3e-8f90-0123456789ab", prefix)
        == "celery-task-meta-<uuid>"
    )
    # A key of another deployment keeps its prefix (with its digits written #).
    assert figures.key_shape("other:events:project:3", prefix) == "other:events:project:#"


def test_families_with_a_key_per_document_are_what_documents_leave_behind():
    prefix = "p:"
    keys = [f"p:dispatched:{number}:1" for number in range(60)]
    keys += [f"p:events:project:{number}" for number in range(2)]
    keys += ["p:monitoring:counters", "p:unacked"]
    keys += [f"p:celery-task-meta-00000000-0000-0000-0000-{number:012d}" for number in range(70)]
    families = figures.key_families(keys, prefix)
    assert families["dispatched:#:#"] == 60
    assert figures.per_document_families(families, 60, ignore=["celery-task-meta-<uuid>"]) == {"dispatched:#:#": 60}
    assert figures.per_document_families(families, 61) == {"celery-task-meta-<uuid>": 70}


def test_longest_ttl_of_a_shape_is_no_expiry_once_one_key_never_expires():
    pairs = [("p:rank:job:1", 600), ("p:rank:job:2", 604800), ("p:dispatched:1:1", 30), ("p:dispatched:2:1", -1)]
    pairs.append(("p:dispatched:3:1", 90))
    assert figures.longest_ttls(pairs, "p:") == {"rank:job:#": 604800, "dispatched:#:#": -1}


def test_first_and_last_count_take_the_first_and_last_points_inside_the_window():
    points = [(5.0, 99.0), (12.0, 1.0), (30.0, 2.0), (11.0, 3.0), (40.0, 7.0), (50.0, 9.0), (60.0, 8.0), (95.0, 50.0)]
    assert figures.first_and_last_count(points, 10.0, 90.0, 3) == (2.0, 8.0)
    assert figures.first_and_last_count(points, 100.0, 200.0, 3) == (None, None)
