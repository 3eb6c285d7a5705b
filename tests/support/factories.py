"""Test data through the services, as users create it."""

from __future__ import annotations

import io
import itertools
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.files.base import ContentFile

from documents import services
from documents.models import Document, Project
from tests.support.corpus import CORPUS, FORMATS  # noqa: F401 - re-exported for the corpus and format tests

_counter = itertools.count(1)


def make_project(*, name: str | None = None, embedder: str = "hash", members=(), owner=None) -> Project:
    return services.project_create(
        name=name or f"project-{next(_counter)}", embedder=embedder, members=members, owner=owner
    )


def make_user(*, username: str | None = None, staff: bool = False, password: str = "pw-for-tests-123"):
    return get_user_model().objects.create_user(
        username=username or f"user-{next(_counter)}", password=password, is_staff=staff
    )


def submit_bytes(project: Project, content: bytes, filename: str) -> services.Submission:
    return services.document_submit(project=project, source=io.BytesIO(content), filename=filename)


def submit_path(project: Project, path: Path, filename: str | None = None) -> services.Submission:
    with open(path, "rb") as handle:
        return services.document_submit(project=project, source=handle, filename=filename or path.name)


def markdown_document(sections: int = 3, *, poison_at: int | None = None) -> bytes:
    parts = ["# Field guide to rivers\n"]
    for index in range(sections):
        parts.append(f"\n## Section {index}\n")
        body = f"River section {index} describes currents, banks and the fish that live there. " * 6
        if poison_at == index:
            body += " POISON-PILL "
        parts.append(body + "\n")
    return "".join(parts).encode()


def document_status(document: Document) -> str:
    return Document.objects.values_list("status", flat=True).get(id=document.id)


def replace_stored_bytes(document: Document, content: bytes) -> None:
    """Change the stored file under the same document and name (an edited
    source), whatever the storage backend."""
    storage, name = document.file.storage, document.file.name
    storage.delete(name)
    assert storage.save(name, ContentFile(content)) == name
