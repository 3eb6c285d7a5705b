"""Every change to projects, documents and chunks, one function each, by topic.

Where a document's or a chunk's status changes: `transitions.py`, and only
there. The other modules ask it for every move:

- projects:  creating a project, its pinned embedding model
- uploads:   a file becomes a stored file, a `pending` document and its job
- runs:      reindex, retry, cancel, delete
- parsing:   a run begins; the file becomes chunks
- retrying:  the retry run re-queues a document's failed chunks
- dispatch:  sending the tasks (the chord, re-dispatches, a job's task)
- embedding: claiming, embedding and storing one chunk
- finishing: a run's final status from its chunks
- repairs:   what the reconcilers and `mirage_check --repair` mend
- pausing:   pausing and resuming a project's or the deployment's work
- embedders: moving a project to another embedding model (a migration job,
             its switch, cancel and repairs); embedder_batches: its batches
"""

from documents.services.dispatch import dispatch_chord, dispatch_chunks, dispatch_job
from documents.services.embedder_batches import StepOutcome, embedder_migration_step
from documents.services.embedders import (
    EmbedderRejected,
    EmbedderUnchanged,
    MigrationInProgress,
    dispatch_migration_step,
    embedder_migration_abandon,
    embedder_migration_switch,
    embedder_migrations_repair,
    migration_state,
    project_embedder_migrate,
)
from documents.services.embedding import (
    ClaimedChunk,
    EmbedOutcome,
    chunk_claim,
    chunk_embed,
    chunk_mark_embedded,
    chunk_mark_failed,
    chunk_release,
)
from documents.services.finishing import document_chunk_counts, document_finalize
from documents.services.parsing import document_parse
from documents.services.pausing import (
    deployment_pause,
    deployment_resume,
    project_pause,
    project_resume,
)
from documents.services.projects import project_create, project_embedder
from documents.services.repairs import (
    chunks_fail_stranded,
    chunks_redispatch_stuck,
    documents_finalize_settled,
    documents_rederive_disagreeing,
    documents_redispatch_unparsed,
    lost_run_ends,
)
from documents.services.retrying import document_retry_chunks
from documents.services.runs import (
    DocumentBusy,
    NothingToRetry,
    document_cancel_work,
    document_delete,
    document_reindex,
    document_retry_failed,
)
from documents.services.transitions import (
    CHUNK_TRANSITIONS,
    DOCUMENT_TRANSITIONS,
    IllegalTransition,
    document_transition,
    lock_job_and_document,
)
from documents.services.uploads import (
    EmptyUpload,
    QuotaExceeded,
    Submission,
    UploadRejected,
    UploadTooLarge,
    display_filename,
    document_submit,
    sanitize_filename,
)

__all__ = [
    "EmbedderRejected",
    "EmbedderUnchanged",
    "MigrationInProgress",
    "StepOutcome",
    "dispatch_migration_step",
    "embedder_migration_abandon",
    "embedder_migration_step",
    "embedder_migration_switch",
    "embedder_migrations_repair",
    "migration_state",
    "project_embedder_migrate",
    "CHUNK_TRANSITIONS",
    "DOCUMENT_TRANSITIONS",
    "ClaimedChunk",
    "DocumentBusy",
    "EmbedOutcome",
    "EmptyUpload",
    "IllegalTransition",
    "NothingToRetry",
    "QuotaExceeded",
    "Submission",
    "UploadRejected",
    "UploadTooLarge",
    "chunk_claim",
    "chunk_embed",
    "chunk_mark_embedded",
    "chunk_mark_failed",
    "chunk_release",
    "chunks_fail_stranded",
    "chunks_redispatch_stuck",
    "deployment_pause",
    "deployment_resume",
    "dispatch_chord",
    "dispatch_chunks",
    "dispatch_job",
    "display_filename",
    "document_cancel_work",
    "document_chunk_counts",
    "document_delete",
    "document_finalize",
    "document_parse",
    "document_reindex",
    "document_retry_chunks",
    "document_retry_failed",
    "document_submit",
    "document_transition",
    "documents_finalize_settled",
    "documents_redispatch_unparsed",
    "lost_run_ends",
    "documents_rederive_disagreeing",
    "lock_job_and_document",
    "project_create",
    "project_pause",
    "project_resume",
    "project_embedder",
    "sanitize_filename",
]
