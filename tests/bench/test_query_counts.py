"""The documents list with progress costs the same number of SQL queries
for 10 documents as for 200: no query per document or per chunk."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from documents.models import Chunk
from tests.support.factories import make_project, make_user, markdown_document, submit_bytes

pytestmark = [pytest.mark.unit, pytest.mark.django_db]

CHUNK_STATUSES = [Chunk.Status.PENDING, Chunk.Status.PROCESSING, Chunk.Status.ERROR]


def add_documents(project, count: int) -> None:
    for number in range(count):
        content = markdown_document(1) + f"\nDocument {number} of project {project.id}.\n".encode()
        document = submit_bytes(project, content, f"doc-{number}.md").document
        Chunk.objects.bulk_create(
            Chunk(
                document=document,
                position=position,
                content=f"chunk {position}",
                content_sha256="0" * 64,
                status=status,
            )
            for position, status in enumerate(CHUNK_STATUSES)
        )


def list_queries(client: APIClient, project, expected_count: int) -> int:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(f"/api/v1/projects/{project.id}/documents/")
    assert response.status_code == 200
    assert response.data["count"] == expected_count
    assert response.data["results"][0]["chunks_total"] == len(CHUNK_STATUSES)
    return len(captured.captured_queries)


def test_document_list_costs_the_same_queries_for_10_and_200_documents():
    user = make_user()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    few, many = make_project(members=[user]), make_project(members=[user])
    add_documents(few, 10)
    add_documents(many, 200)
    list_queries(client, few, 10)  # first-request caches (content types) out of the count

    assert list_queries(client, few, 10) == list_queries(client, many, 200)
