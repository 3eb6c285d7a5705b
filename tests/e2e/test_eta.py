"""Waiting, working and the ETA, held to account on a real run."""

from __future__ import annotations

import time

import pytest
from rest_framework.test import APIClient

from documents.models import Document
from tests.support.factories import make_project, make_user, markdown_document, submit_bytes
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_the_eta_made_at_a_quarter_is_within_half_of_the_time_it_really_took(worker):
    user = make_user()
    client = APIClient()
    client.force_authenticate(user)
    project = make_project(embedder="tests.support.embedders.SteadyEmbedder", members=[user])
    document = submit_bytes(project, markdown_document(sections=160), "steady.md").document

    def read() -> dict:
        return client.get(f"/api/v1/documents/{document.id}/").json()

    quarter = wait_until(
        lambda: (body := read())["status"] == "indexing" and body["progress_percentage"] >= 25 and body,
        timeout=300,
        interval=0.05,
        message="a quarter embedded",
    )
    at_quarter = time.monotonic()
    wait_until(
        lambda: Document.objects.get(id=document.id).status in Document.FINAL_STATUSES,
        timeout=300,
        interval=0.05,
        message="document final",
    )
    took = time.monotonic() - at_quarter

    assert quarter["eta_seconds"] is not None
    assert 0.5 * took <= quarter["eta_seconds"] <= 1.5 * took, (quarter["eta_seconds"], took)
    assert quarter["waiting_seconds"] >= 0 and quarter["working_seconds"] > 0
    assert quarter["queue_position"] is None
    final = read()
    assert final["status"] == "ready" and final["eta_seconds"] is None
    assert final["working_seconds"] >= quarter["working_seconds"]
    assert final["current_job"]["working_seconds"] == final["working_seconds"]


def test_a_job_waiting_for_a_slot_says_how_many_are_ahead(settings):
    settings.MIRAGE_MAX_CONCURRENT_INDEXING_JOBS = 0
    user = make_user()
    client = APIClient()
    client.force_authenticate(user)
    project = make_project(members=[user])
    documents = [
        submit_bytes(project, markdown_document(sections=1) + bytes([65 + n]), f"d{n}.md").document for n in range(3)
    ]
    bodies = [client.get(f"/api/v1/documents/{document.id}/").json() for document in documents]
    assert [body["queue_position"] for body in bodies] == [0, 1, 2]
    assert [body["current_job"]["queue_position"] for body in bodies] == [0, 1, 2]
    listed = client.get(f"/api/v1/projects/{project.id}/documents/").json()["results"]
    assert sorted(body["queue_position"] for body in listed) == [0, 1, 2]
    assert all(body["working_seconds"] is None and body["waiting_seconds"] >= 0 for body in bodies)
