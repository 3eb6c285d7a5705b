"""API plumbing shared by the apps: strict input, predictable errors."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime, tzinfo

import kombu.exceptions
import redis
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db import OperationalError as DatabaseOperationalError
from django.http import Http404, JsonResponse
from django.utils import timezone
from django.views.defaults import page_not_found
from drf_spectacular.utils import OpenApiResponse
from rest_framework import exceptions, serializers
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import exception_handler as drf_exception_handler

logger = logging.getLogger(__name__)


class StrictSerializer(serializers.Serializer):
    """Refuses fields it does not know, so a typo is a 400, not silently ignored."""

    def to_internal_value(self, data):
        if hasattr(data, "keys"):
            unknown = sorted(set(data.keys()) - set(self.fields))
            if unknown:
                expected = ", ".join(self.fields)
                raise serializers.ValidationError(
                    {name: [f"Unknown field; the fields are: {expected}."] for name in unknown}
                )
        return super().to_internal_value(data)


def validate_query(serializer_class, request) -> dict:
    """Validate query parameters with a serializer; 400 with field messages."""
    serializer = serializer_class(data=request.query_params)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


class PaginatedApiMixin:
    """For an APIView whose GET answers with `paginate()`: the schema
    generator reads `pagination_class` to describe the page envelope."""

    pagination_class = api_settings.DEFAULT_PAGINATION_CLASS


def paginate(view, request, queryset, serializer_class):
    """A page of `queryset` in the project's standard envelope
    (count, next, previous, results)."""
    paginator = view.pagination_class()
    page = paginator.paginate_queryset(queryset, request, view=view)
    return paginator.get_paginated_response(serializer_class(page, many=True).data)


def paginate_rows(view, request, queryset, rows: Callable[[list[int]], Sequence[dict]]):
    """paginate() for a list whose rows are costly to select (aggregates,
    joins): the count and the page's ids come from `queryset` alone, which
    should be the plain filtered and ordered table, and `rows(ids)` builds
    the page's results in the order of `ids`. The database then aggregates
    the page's rows only, not every row the filter keeps."""
    paginator = view.pagination_class()
    ids = paginator.paginate_queryset(queryset.values_list("id", flat=True), request, view=view)
    return paginator.get_paginated_response(rows(list(ids)))


def response_now(context: dict) -> datetime:
    """The instant a response's durations run to, read once per response and
    kept in the serializer context: every row of a page, and a document and
    its job, are measured to the same instant (a caller may set it)."""
    now = context.get("now")
    if now is None:
        now = context["now"] = timezone.now()
    return now


def datetime_text(value: datetime | None, zone: tzinfo) -> str | None:
    """What serializers.DateTimeField answers for an aware datetime (ISO
    8601 in `zone`, the current time zone; `Z` for UTC), without building a
    field: rows built by hand use it so they match the serializers'."""
    if not value:
        return None
    text = value.astimezone(zone).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


class PayloadTooLarge(exceptions.APIException):
    status_code = 413
    default_detail = "Request body too large."
    default_code = "payload_too_large"


class Conflict(exceptions.APIException):
    status_code = 409
    default_detail = "Conflict."
    default_code = "conflict"


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()


# A 400 names each field at fault with its messages; a body that cannot be
# parsed at all, or whose media type is refused, is answered with `detail`.
FIELD_ERRORS_SCHEMA = {
    "type": "object",
    "description": "Messages by field name (`detail` when the body could not be parsed).",
    "additionalProperties": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
    "example": {"name": ["This field may not be blank."]},
}

_ERROR_DESCRIPTIONS = {
    400: "Invalid input.",
    401: "No credentials, or invalid ones.",
    403: "The caller may not do this.",
    404: "No such object, or it belongs to a project the caller is not a member of.",
    409: "The object is not in a state that allows this.",
    413: "The request body is larger than the upload limit.",
    415: "The media type of the request body is not accepted.",
    503: "A service this request needs does not answer.",
}


def error_responses(*codes: int) -> dict[int, OpenApiResponse]:
    """Schema entries for the error answers of an operation, so that clients
    (and the schemathesis run in the test suite) know every status code."""
    return {
        code: OpenApiResponse(
            response=FIELD_ERRORS_SCHEMA if code == 400 else ErrorSerializer,
            description=_ERROR_DESCRIPTIONS[code],
        )
        for code in codes
    }


def not_found(request, exception):
    """Django's 404 handler (`handler404` in the root URLconf). A path that
    no pattern matches never reaches DRF, e.g. `/api/v1/documents/abc/`
    (the ids are `<int:...>`): under /api/ it is answered like every other
    API 404, in JSON; elsewhere (the admin) with Django's page."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Not found."}, status=404)
    return page_not_found(request, exception)


# Failures of the services behind the API, not of the request: answered 503.
SERVICE_ERRORS = (
    DatabaseOperationalError,
    kombu.exceptions.OperationalError,
    redis.ConnectionError,
    redis.TimeoutError,
)


def _service_name(exc: Exception) -> str:
    return "The database" if isinstance(exc, DatabaseOperationalError) else "The task broker (Redis)"


def exception_handler(exc, context):
    """DRF's handler, plus: Django's 404/403 as JSON, and any unexpected
    error logged and answered as a JSON 500 that leaks nothing."""
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None and isinstance(exc, SERVICE_ERRORS):
        logger.warning("API request failed: a service does not answer: %s", exc)
        return Response(
            {
                "detail": f"{_service_name(exc)} does not answer; try again shortly (a repeated upload is recognised "
                "by its content and never stored twice)."
            },
            status=503,
            headers={"Retry-After": "5"},
        )
    if response is None:
        logger.exception("unhandled API error", exc_info=exc)
        return Response({"detail": "Internal error; it has been logged."}, status=500)
    return response


class StatusChangeSerializer(serializers.Serializer):
    """One entry of a document's or a job's history."""

    from_status = serializers.CharField(help_text="Empty on the entry that records the creation.")
    to_status = serializers.CharField()
    actor = serializers.CharField(
        help_text="`user:<id>`, `operator:<id>` (admin), `worker`, `reconciler:<name>` or `system`."
    )
    reason = serializers.CharField()
    job = serializers.IntegerField(source="job_id", allow_null=True)
    at = serializers.DateTimeField()


class AuditEntrySerializer(serializers.Serializer):
    actor = serializers.CharField()
    action = serializers.CharField(
        help_text="project.created, document.uploaded, document.deleted, document.reindex, document.retry, "
        "directory.import, ..."
    )
    target = serializers.CharField()
    details = serializers.DictField()
    at = serializers.DateTimeField()


def history_of(*, entity: str, entity_id: int):
    """An entity's history, oldest first."""
    from common.models import StatusChange

    return StatusChange.objects.filter(entity=entity, entity_id=entity_id).order_by("id")
