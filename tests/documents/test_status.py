import itertools

import pytest

from documents.status import derive_document_status

pytestmark = pytest.mark.unit

STATUSES = ["pending", "processing", "ready", "corrupted", "error"]


def expected(counts):
    total = sum(counts.values())
    if total == 0:
        return "error"
    if counts["pending"] or counts["processing"]:
        return "indexing"
    if counts["ready"] == total:
        return "ready"
    if counts["ready"] + counts["corrupted"]:
        return "partial"
    return "error"


@pytest.mark.parametrize("combination", list(itertools.product([0, 1, 2], repeat=len(STATUSES))))
def test_status_for_every_combination_of_chunk_counts(combination):
    counts = dict(zip(STATUSES, combination, strict=False))
    assert derive_document_status(counts) == expected(counts)


def test_no_chunks_is_an_error_not_ready():
    assert derive_document_status({}) == "error"


def test_all_ready_is_ready():
    assert derive_document_status({"ready": 5}) == "ready"


def test_one_failed_chunk_makes_the_document_partial():
    assert derive_document_status({"ready": 4, "error": 1}) == "partial"


def test_truncated_chunks_make_the_document_partial():
    assert derive_document_status({"ready": 4, "corrupted": 1}) == "partial"
    assert derive_document_status({"corrupted": 2}) == "partial"


def test_nothing_usable_is_an_error():
    assert derive_document_status({"error": 3}) == "error"


def test_any_chunk_in_flight_keeps_the_document_indexing():
    assert derive_document_status({"ready": 9, "processing": 1}) == "indexing"
    assert derive_document_status({"error": 9, "pending": 1}) == "indexing"
