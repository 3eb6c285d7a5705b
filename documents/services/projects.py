"""Projects: creating one, and the embedding model it is pinned to."""

from __future__ import annotations

from django.conf import settings
from django.db import transaction

from common import history
from documents import vectorindex
from documents.embeddings import get_embedder
from documents.embeddings.base import PermanentEmbeddingError
from documents.models import Project


@transaction.atomic
def project_create(
    *, name: str, embedder: str | None = None, members=(), owner=None, actor: str = history.SYSTEM
) -> Project:
    """Create a project and pin its embedding model (from `embedder` or
    MIRAGE_EMBEDDER). The owner (if any) is a member too; names are unique
    per owner."""
    spec = embedder or settings.MIRAGE_EMBEDDER
    provider = get_embedder(spec)
    project = Project.objects.create(
        name=name,
        embedder=spec,
        embedding_model=provider.model_id,
        embedding_dimensions=provider.dimensions,
        owner=owner,
    )
    members = list(members)
    if owner is not None and owner not in members:
        members.append(owner)
    if members:
        project.members.add(*members)
    history.audit_record(
        project_id=project.id,
        actor=actor,
        action="project.created",
        target=f"project {name}",
        embedder=spec,
        members=[member.pk for member in members],
    )
    transaction.on_commit(lambda: vectorindex.ensure_index(model_id=provider.model_id, dimensions=provider.dimensions))
    return project


def project_embedder(project: Project):
    provider = get_embedder(project.embedder)
    if provider.model_id != project.embedding_model or provider.dimensions != project.embedding_dimensions:
        raise PermanentEmbeddingError(
            f"project {project.name!r} is pinned to {project.embedding_model} "
            f"({project.embedding_dimensions} dims) but the configured provider serves "
            f"{provider.model_id} ({provider.dimensions} dims)"
        )
    return provider
