"""The documents API: one view per operation; logic lives in services."""

from __future__ import annotations

from functools import partial

from django.db import IntegrityError
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions, status
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.permissions import IsAdminUser
from rest_framework.response import Response
from rest_framework.views import APIView

from common import pauses
from common.api import (
    AuditEntrySerializer,
    Conflict,
    ErrorSerializer,
    PaginatedApiMixin,
    PayloadTooLarge,
    StatusChangeSerializer,
    error_responses,
    history_of,
    paginate,
    paginate_rows,
    validate_query,
)
from common.history import user_actor
from common.models import AuditEntry
from documents import imports, search, selectors, services
from documents.api import serializers as s
from documents.embeddings.base import EmbeddingError
from documents.models import Chunk, Document
from documents.parsers import UnsupportedFileType
from jobs.api.serializers import JobSerializer


def _project_for(request, project_id: int):
    return get_object_or_404(selectors.projects_for_user(request.user), id=project_id)


def _document_for(request, document_id: int, *, with_progress: bool = False):
    queryset = selectors.documents_for_user(request.user)
    if with_progress:
        queryset = selectors.documents_with_progress(queryset)
    return get_object_or_404(queryset, id=document_id)


BUSY = OpenApiResponse(ErrorSerializer, description="The document has a job in flight; `detail` names it.")
NOTHING_TO_RETRY_OR_BUSY = OpenApiResponse(
    ErrorSerializer,
    description="The document has a job in flight, or no chunk to retry; `detail` says which.",
)


class ProjectListApi(PaginatedApiMixin, APIView):
    @extend_schema(responses={200: s.ProjectSerializer(many=True), **error_responses(401, 404)})
    def get(self, request):
        return paginate(self, request, selectors.projects_for_user(request.user), s.ProjectSerializer)

    @extend_schema(
        request=s.ProjectInputSerializer,
        responses={201: s.ProjectDetailSerializer, **error_responses(400, 401, 415)},
    )
    def post(self, request):
        serializer = s.ProjectInputSerializer(data=request.data, context={"request": request})
        serializer.is_valid(raise_exception=True)
        try:
            project = services.project_create(
                owner=request.user, actor=user_actor(request.user), **serializer.validated_data
            )
        except EmbeddingError as exc:
            raise exceptions.ValidationError({"embedder": [str(exc)]}) from None
        except IntegrityError:
            # The same name arrived twice at once from this owner.
            raise exceptions.ValidationError({"name": ["You already have a project with this name."]}) from None
        return Response(s.ProjectDetailSerializer(project).data, status=status.HTTP_201_CREATED)


class ProjectDetailApi(APIView):
    @extend_schema(responses={200: s.ProjectDetailSerializer, **error_responses(401, 404)})
    def get(self, request, project_id: int):
        return Response(s.ProjectDetailSerializer(_project_for(request, project_id)).data)


class ProjectDocumentsApi(PaginatedApiMixin, APIView):
    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(
        parameters=[
            OpenApiParameter("status", str, enum=Document.Status.values),
            OpenApiParameter("type", str, enum=Document.FileType.values),
            OpenApiParameter("page", int),
        ],
        responses={200: s.DocumentSerializer(many=True), **error_responses(400, 401, 404)},
    )
    def get(self, request, project_id: int):
        project = _project_for(request, project_id)
        filters = validate_query(s.DocumentFilterSerializer, request)
        queryset = Document.objects.filter(project=project)
        if "status" in filters:
            queryset = queryset.filter(status=filters["status"])
        if "type" in filters:
            queryset = queryset.filter(file_type=filters["type"])
        return paginate_rows(
            self,
            request,
            queryset.order_by("-created_at", "-id"),
            lambda ids: s.document_rows(selectors.documents_page_with_progress(ids)),
        )

    @extend_schema(
        request={"multipart/form-data": s.DocumentUploadSerializer},
        responses={
            201: s.DocumentSerializer,
            200: OpenApiResponse(s.DocumentSerializer, description="The project already holds these bytes."),
            **error_responses(400, 401, 404, 413),
            409: OpenApiResponse(ErrorSerializer, description="The project is at a quota; `detail` names it."),
            415: OpenApiResponse(
                s.UnsupportedFileTypeSerializer,
                description="The content is not a supported format, whatever its name says, "
                "or the request is not multipart/form-data.",
            ),
        },
    )
    def post(self, request, project_id: int):
        project = _project_for(request, project_id)
        # Refuse an oversized body before reading it.
        declared = request.META.get("CONTENT_LENGTH") or "0"
        if declared.isdigit() and int(declared) > s.max_upload_bytes() + 1024 * 1024:
            raise PayloadTooLarge(f"file is larger than the {s.max_upload_bytes() // (1024 * 1024)} MB limit")
        serializer = s.DocumentUploadSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        upload = serializer.validated_data["file"]
        try:
            submission = services.document_submit(
                project=project,
                source=upload,
                filename=upload.name,
                metadata=serializer.validated_data.get("metadata") or {},
                priority=serializer.validated_data["priority"],
                actor=user_actor(request.user),
            )
        except services.UploadTooLarge as exc:
            raise PayloadTooLarge(str(exc)) from None
        except services.QuotaExceeded as exc:
            raise Conflict(str(exc)) from None
        except services.EmptyUpload as exc:
            raise exceptions.ValidationError({"file": [str(exc)]}) from None
        except UnsupportedFileType as exc:
            return Response(
                {"detail": str(exc), "detected_type": exc.detected_type},
                status=status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            )
        document = selectors.documents_with_progress(Document.objects.filter(id=submission.document.id)).get()
        return Response(
            s.DocumentSerializer(document).data,
            status=status.HTTP_201_CREATED if submission.created else status.HTTP_200_OK,
        )


class DocumentDetailApi(APIView):
    @extend_schema(responses={200: s.DocumentSerializer, **error_responses(401, 404)})
    def get(self, request, document_id: int):
        return Response(s.DocumentSerializer(_document_for(request, document_id, with_progress=True)).data)

    @extend_schema(responses={204: None, **error_responses(401, 404)})
    def delete(self, request, document_id: int):
        services.document_delete(document=_document_for(request, document_id), actor=user_actor(request.user))
        return Response(status=status.HTTP_204_NO_CONTENT)


class DocumentHistoryApi(PaginatedApiMixin, APIView):
    @extend_schema(
        parameters=[OpenApiParameter("page", int)],
        responses={200: StatusChangeSerializer(many=True), **error_responses(400, 401, 404)},
    )
    def get(self, request, document_id: int):
        """Every status change of the document, oldest first, with who made it and why."""
        document = _document_for(request, document_id)
        return paginate(self, request, history_of(entity="document", entity_id=document.id), StatusChangeSerializer)


class DocumentChunksApi(PaginatedApiMixin, APIView):
    @extend_schema(
        parameters=[OpenApiParameter("status", str, enum=Chunk.Status.values), OpenApiParameter("page", int)],
        responses={200: s.ChunkSerializer(many=True), **error_responses(400, 401, 404)},
    )
    def get(self, request, document_id: int):
        document = _document_for(request, document_id)
        filters = validate_query(s.ChunkFilterSerializer, request)
        queryset = Chunk.objects.filter(document=document).order_by("position").defer("embedding")
        if "status" in filters:
            queryset = queryset.filter(status=filters["status"])
        return paginate(self, request, queryset, s.ChunkSerializer)


class DocumentReindexApi(APIView):
    @extend_schema(
        request=s.ReindexInputSerializer,
        responses={202: JobSerializer, **error_responses(400, 401, 404, 415), 409: BUSY},
    )
    def post(self, request, document_id: int):
        document = _document_for(request, document_id)
        serializer = s.ReindexInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            job = services.document_reindex(
                document=document, actor=user_actor(request.user), priority=serializer.validated_data["priority"]
            )
        except services.DocumentBusy as exc:
            raise Conflict(str(exc)) from None
        return Response(JobSerializer(job).data, status=status.HTTP_202_ACCEPTED)


class DocumentRetryApi(APIView):
    @extend_schema(
        request=s.RetryInputSerializer,
        responses={202: JobSerializer, **error_responses(400, 401, 404, 415), 409: NOTHING_TO_RETRY_OR_BUSY},
    )
    def post(self, request, document_id: int):
        document = _document_for(request, document_id)
        serializer = s.RetryInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            job = services.document_retry_failed(
                document=document, actor=user_actor(request.user), **serializer.validated_data
            )
        except (services.DocumentBusy, services.NothingToRetry) as exc:
            raise Conflict(str(exc)) from None
        return Response(JobSerializer(job).data, status=status.HTTP_202_ACCEPTED)


class ProjectAuditApi(PaginatedApiMixin, APIView):
    @extend_schema(
        parameters=[OpenApiParameter("page", int)],
        responses={200: AuditEntrySerializer(many=True), **error_responses(400, 401, 404)},
    )
    def get(self, request, project_id: int):
        """What was done to the project's data (uploads, deletions, reindex, retry,
        cancel, settings), oldest first; entries outlive what they record."""
        project = _project_for(request, project_id)
        return paginate(
            self, request, AuditEntry.objects.filter(project_id=project.id).order_by("id"), AuditEntrySerializer
        )


class ProjectImportApi(APIView):
    @extend_schema(
        request=s.ImportInputSerializer,
        responses={202: JobSerializer, **error_responses(400, 401, 403, 404, 415)},
    )
    def post(self, request, project_id: int):
        project = _project_for(request, project_id)
        if not IsAdminUser().has_permission(request, self):
            raise exceptions.PermissionDenied("Only staff may import directories.")
        serializer = s.ImportInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            job = imports.import_start(
                project=project,
                path=serializer.validated_data["path"],
                actor=user_actor(request.user),
                priority=serializer.validated_data["priority"],
            )
        except imports.ImportPathRejected as exc:
            raise exceptions.ValidationError({"path": [str(exc)]}) from None
        return Response(JobSerializer(job).data, status=status.HTTP_202_ACCEPTED)


MIGRATION_CONFLICT = OpenApiResponse(
    ErrorSerializer,
    description="A migration is already under way, or the project already uses that model; `detail` says which.",
)


class ProjectEmbedderApi(APIView):
    @extend_schema(responses={200: s.EmbedderStateSerializer, **error_responses(401, 404)})
    def get(self, request, project_id: int):
        """The project's embedding model, and the one it is moving to while a migration runs."""
        project = _project_for(request, project_id)
        return Response(s.EmbedderStateSerializer(_embedder_state(project)).data)

    @extend_schema(
        request=s.EmbedderInputSerializer,
        responses={202: JobSerializer, **error_responses(400, 401, 403, 404, 415), 409: MIGRATION_CONFLICT},
    )
    def post(self, request, project_id: int):
        """Move the project to another embedding model without downtime (staff or
        the project's owner): a migration job builds the new vectors in the
        background while searches keep using the current model, then switches
        every chunk at once. Cancel the job to keep the current model."""
        project = _project_for(request, project_id)
        if not (request.user.is_staff or project.owner_id == request.user.id):
            raise exceptions.PermissionDenied("Only staff or the project's owner may change its embedding model.")
        serializer = s.EmbedderInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            job = services.project_embedder_migrate(
                project=project, embedder=serializer.validated_data["embedder"], actor=user_actor(request.user)
            )
        except services.EmbedderRejected as exc:
            raise exceptions.ValidationError({"embedder": [str(exc)]}) from None
        except (services.EmbedderUnchanged, services.MigrationInProgress) as exc:
            raise Conflict(str(exc)) from None
        return Response(JobSerializer(job).data, status=status.HTTP_202_ACCEPTED)


def _embedder_state(project) -> dict:
    return {
        "embedder": project.embedder,
        "embedding_model": project.embedding_model,
        "embedding_dimensions": project.embedding_dimensions,
        "migration": services.migration_state(project),
    }


class ProjectSearchApi(APIView):
    @extend_schema(
        parameters=[
            OpenApiParameter("q", str, required=True),
            OpenApiParameter("k", int),
            OpenApiParameter("mode", str, enum=list(search.MODES)),
            OpenApiParameter("document", int, many=True, description="Only these documents (repeatable)."),
            OpenApiParameter("type", str, enum=Document.FileType.values),
            OpenApiParameter("metadata", str, description="A JSON object the upload's metadata must contain."),
            OpenApiParameter("created_after", OpenApiTypes.DATETIME),
            OpenApiParameter("created_before", OpenApiTypes.DATETIME),
            OpenApiParameter(
                "heading", str, many=True, description="Leading levels of the heading path, one per value, in order."
            ),
            OpenApiParameter("context", int, description=f"Neighbouring chunks on each side (0-{search.MAX_CONTEXT})."),
        ],
        responses={
            200: s.SearchHitSerializer(many=True),
            **error_responses(400, 401, 404),
            503: OpenApiResponse(ErrorSerializer, description="The project's embedding provider does not answer."),
        },
    )
    def get(self, request, project_id: int):
        project = _project_for(request, project_id)
        query = s.SearchQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        params = query.validated_data
        try:
            hits = search.search(
                project=project,
                query=params["q"],
                k=params["k"],
                mode=params["mode"],
                filters=query.filters(),
                context=params["context"],
            )
        except EmbeddingError as exc:
            return Response(
                {"detail": f"the embedding provider is unavailable: {exc}"}, status=status.HTTP_503_SERVICE_UNAVAILABLE
            )
        return Response(s.SearchHitSerializer(hits, many=True).data)


PAUSE_CONFLICT = OpenApiResponse(ErrorSerializer, description="Already paused; `detail` says since when and why.")
RESUME_CONFLICT = OpenApiResponse(ErrorSerializer, description="Not paused: nothing to resume.")


def _change_pause(request, input_serializer, change, refused: type[Exception]) -> Response:
    """Read the reason, apply `change(actor=..., reason=...)` (a pause or a
    resume), and answer the pause; `refused` (already paused, not paused)
    is a 409 with its reason."""
    serializer = input_serializer(data=request.data)
    serializer.is_valid(raise_exception=True)
    try:
        pause = change(actor=user_actor(request.user), reason=serializer.validated_data["reason"])
    except refused as exc:
        raise Conflict(str(exc)) from None
    return Response(s.PauseSerializer(pause).data)


class ProjectPauseApi(APIView):
    @extend_schema(
        request=s.PauseInputSerializer,
        responses={200: s.PauseSerializer, **error_responses(400, 401, 404, 415), 409: PAUSE_CONFLICT},
    )
    def post(self, request, project_id: int):
        """Pause the project's work: within seconds no parse and no embedding
        call starts for it; calls under way finish and are kept. The pause
        lasts until resumed, across restarts."""
        project = _project_for(request, project_id)
        return _change_pause(
            request, s.PauseInputSerializer, partial(services.project_pause, project=project), pauses.AlreadyPaused
        )


class ProjectResumeApi(APIView):
    @extend_schema(
        request=s.ResumeInputSerializer,
        responses={200: s.PauseSerializer, **error_responses(400, 401, 404, 415), 409: RESUME_CONFLICT},
    )
    def post(self, request, project_id: int):
        """End the project's pause; its work continues where it stopped."""
        project = _project_for(request, project_id)
        return _change_pause(
            request, s.ResumeInputSerializer, partial(services.project_resume, project=project), pauses.NotPaused
        )


class SystemPauseApi(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(
        request=s.PauseInputSerializer,
        responses={200: s.PauseSerializer, **error_responses(400, 401, 403, 415), 409: PAUSE_CONFLICT},
    )
    def post(self, request):
        """Pause the whole deployment's work (staff only)."""
        return _change_pause(request, s.PauseInputSerializer, services.deployment_pause, pauses.AlreadyPaused)


class SystemResumeApi(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(
        request=s.ResumeInputSerializer,
        responses={200: s.PauseSerializer, **error_responses(400, 401, 403, 415), 409: RESUME_CONFLICT},
    )
    def post(self, request):
        """End the deployment's pause (staff only); projects paused on their own stay paused."""
        return _change_pause(request, s.ResumeInputSerializer, services.deployment_resume, pauses.NotPaused)
