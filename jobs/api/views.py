from django.shortcuts import get_object_or_404
from django_filters import rest_framework as filters
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import generics, status
from rest_framework.response import Response
from rest_framework.views import APIView

from common import history
from common.api import (
    Conflict,
    ErrorSerializer,
    PaginatedApiMixin,
    StatusChangeSerializer,
    error_responses,
    history_of,
    paginate,
)
from jobs import registry, selectors, services
from jobs.api.serializers import JobSerializer
from jobs.models import Job


class JobFilter(filters.FilterSet):
    status = filters.ChoiceFilter(choices=Job.Status.choices)
    kind = filters.ChoiceFilter(choices=registry.kinds)
    project = filters.NumberFilter(field_name="project_id")

    class Meta:
        model = Job
        fields = ["status", "kind", "project"]


class _UserJobsMixin:
    serializer_class = JobSerializer
    queryset = Job.objects.none()  # the schema generator's view of the model

    def get_queryset(self):
        return selectors.jobs_for_user(self.request.user)


@extend_schema_view(get=extend_schema(responses={200: JobSerializer(many=True), **error_responses(400, 401, 404)}))
class JobListApi(_UserJobsMixin, generics.ListAPIView):
    filterset_class = JobFilter


@extend_schema_view(get=extend_schema(responses={200: JobSerializer, **error_responses(401, 404)}))
class JobDetailApi(_UserJobsMixin, generics.RetrieveAPIView):
    lookup_url_kwarg = "job_id"


class JobHistoryApi(PaginatedApiMixin, APIView):
    @extend_schema(
        parameters=[OpenApiParameter("page", int)],
        responses={200: StatusChangeSerializer(many=True), **error_responses(400, 401, 404)},
    )
    def get(self, request, job_id: int):
        """Every status change of the job, oldest first, with who made it and why."""
        job = get_object_or_404(selectors.jobs_for_user(request.user), id=job_id)
        return paginate(self, request, history_of(entity="job", entity_id=job.id), StatusChangeSerializer)


class JobCancelApi(APIView):
    serializer_class = JobSerializer

    @extend_schema(
        request=None,
        responses={
            202: JobSerializer,
            **error_responses(401, 404),
            409: OpenApiResponse(ErrorSerializer, description="The job has already finished."),
        },
    )
    def post(self, request, job_id: int):
        job = get_object_or_404(selectors.jobs_for_user(request.user), id=job_id)
        try:
            job = services.job_cancel(
                job_id=job.id, actor=history.user_actor(request.user), reason="cancelled through the API"
            )
        except services.JobAlreadyFinished as exc:
            raise Conflict(str(exc)) from None
        return Response(JobSerializer(job).data, status=status.HTTP_202_ACCEPTED)
