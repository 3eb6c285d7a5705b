import pytest
from celery.signals import before_task_publish
from django.core.files.uploadedfile import SimpleUploadedFile

from tests.support.factories import markdown_document

pytestmark = [pytest.mark.unit, pytest.mark.django_db(transaction=True)]


def test_upload_answers_before_any_parsing_and_queues_the_parse(api, project):
    published = []

    def record(sender=None, body=None, **kwargs):
        published.append((sender, list(body[0]) if body else None))

    before_task_publish.connect(record, weak=False)
    try:
        response = api.post(
            f"/api/v1/projects/{project.id}/documents/",
            {"file": SimpleUploadedFile("long.md", markdown_document(sections=50))},
            format="multipart",
        )
    finally:
        before_task_publish.disconnect(record)

    assert response.status_code == 201
    body = response.json()
    # Nothing was parsed while the request ran...
    assert body["status"] == "pending"
    assert body["chunks_total"] == 0
    # ...and the parse went to the broker with ids only.
    assert ("documents.parse_document", [body["id"], body["current_job"]["id"]]) in published
