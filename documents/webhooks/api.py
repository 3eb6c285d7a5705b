"""The webhooks API: a project's webhooks, their delivery log, redelivery."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from common.api import Conflict, ErrorSerializer, PaginatedApiMixin, StrictSerializer, error_responses, paginate
from common.history import user_actor
from documents import selectors
from documents.webhooks import network, services
from documents.webhooks.models import WEBHOOK_EVENTS, Webhook, WebhookDelivery


class WebhookInputSerializer(StrictSerializer):
    url = serializers.URLField(max_length=2000)
    events = serializers.ListField(
        child=serializers.ChoiceField(choices=WEBHOOK_EVENTS), min_length=1, max_length=len(WEBHOOK_EVENTS) * 4
    )
    description = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")
    active = serializers.BooleanField(required=False, default=True)

    def validate_url(self, value: str) -> str:
        try:
            network.check_url_syntax(value)
        except network.UnsafeUrl as exc:
            raise serializers.ValidationError(str(exc)) from None
        return value


class WebhookUpdateSerializer(WebhookInputSerializer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, partial=True, **kwargs)


class WebhookSerializer(serializers.ModelSerializer):
    project_id = serializers.IntegerField(read_only=True)
    events = serializers.ListField(child=serializers.CharField())
    disabled = serializers.SerializerMethodField(help_text="Switched off by Mirage after failing too long.")

    class Meta:
        model = Webhook
        fields = [
            "id",
            "project_id",
            "url",
            "events",
            "description",
            "active",
            "disabled",
            "disabled_at",
            "disabled_reason",
            "failing_since",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    def get_disabled(self, webhook) -> bool:
        return webhook.disabled_at is not None and not webhook.active


class WebhookCreatedSerializer(WebhookSerializer):
    secret = serializers.CharField(help_text="`whsec_...`: shown once, here. Verify signatures with it.")

    class Meta(WebhookSerializer.Meta):
        fields = WebhookSerializer.Meta.fields + ["secret"]
        read_only_fields = fields


class AttemptSerializer(serializers.Serializer):
    number = serializers.IntegerField()
    at = serializers.DateTimeField()
    url = serializers.CharField()
    status_code = serializers.IntegerField(allow_null=True)
    latency_ms = serializers.IntegerField(allow_null=True)
    response_excerpt = serializers.CharField()
    error = serializers.CharField()


class DeliverySerializer(serializers.ModelSerializer):
    webhook_id = serializers.IntegerField(read_only=True)
    webhook_message_id = serializers.CharField(source="message_id", help_text="The `webhook-id` header.")
    attempts = AttemptSerializer(many=True, read_only=True)

    class Meta:
        model = WebhookDelivery
        fields = [
            "id",
            "webhook_id",
            "webhook_message_id",
            "event_type",
            "state",
            "attempt_count",
            "next_attempt_at",
            "last_status_code",
            "last_error",
            "created_at",
            "finished_at",
            "attempts",
        ]
        read_only_fields = fields


class PageSerializer(StrictSerializer):
    page = serializers.IntegerField(min_value=1, required=False)


def _project(request, project_id: int):
    return get_object_or_404(selectors.projects_for_user(request.user), id=project_id)


def _webhook(request, project_id: int, webhook_id: int) -> Webhook:
    return get_object_or_404(
        Webhook.objects.filter(project__in=selectors.projects_for_user(request.user)),
        project_id=project_id,
        id=webhook_id,
    )


def _bad_url(exc: network.UnsafeUrl):
    return exceptions.ValidationError({"url": [str(exc)]})


class WebhookListApi(PaginatedApiMixin, APIView):
    @extend_schema(
        parameters=[OpenApiParameter("page", int)],
        responses={200: WebhookSerializer(many=True), **error_responses(400, 401, 404)},
    )
    def get(self, request, project_id: int):
        project = _project(request, project_id)
        PageSerializer(data=request.query_params).is_valid(raise_exception=True)
        return paginate(self, request, Webhook.objects.filter(project=project).order_by("id"), WebhookSerializer)

    @extend_schema(
        request=WebhookInputSerializer, responses={201: WebhookCreatedSerializer, **error_responses(400, 401, 404, 415)}
    )
    def post(self, request, project_id: int):
        """Subscribe a URL to the project's events. The answer carries the
        signing secret, which is never shown again."""
        project = _project(request, project_id)
        serializer = WebhookInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            webhook = services.webhook_create(
                project=project, actor=user_actor(request.user), **serializer.validated_data
            )
        except network.UnsafeUrl as exc:
            raise _bad_url(exc) from None
        return Response(WebhookCreatedSerializer(webhook).data, status=status.HTTP_201_CREATED)


class WebhookDetailApi(APIView):
    @extend_schema(responses={200: WebhookSerializer, **error_responses(401, 404)})
    def get(self, request, project_id: int, webhook_id: int):
        return Response(WebhookSerializer(_webhook(request, project_id, webhook_id)).data)

    @extend_schema(
        request=WebhookUpdateSerializer, responses={200: WebhookSerializer, **error_responses(400, 401, 404, 415)}
    )
    def patch(self, request, project_id: int, webhook_id: int):
        """Change a webhook; `active: true` switches a disabled one back on."""
        webhook = _webhook(request, project_id, webhook_id)
        serializer = WebhookUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            webhook = services.webhook_update(
                webhook=webhook, actor=user_actor(request.user), **serializer.validated_data
            )
        except network.UnsafeUrl as exc:
            raise _bad_url(exc) from None
        return Response(WebhookSerializer(webhook).data)

    @extend_schema(responses={204: None, **error_responses(401, 404)})
    def delete(self, request, project_id: int, webhook_id: int):
        services.webhook_delete(webhook=_webhook(request, project_id, webhook_id), actor=user_actor(request.user))
        return Response(status=status.HTTP_204_NO_CONTENT)


class WebhookDeliveriesApi(PaginatedApiMixin, APIView):
    @extend_schema(
        parameters=[OpenApiParameter("page", int)],
        responses={200: DeliverySerializer(many=True), **error_responses(400, 401, 404)},
    )
    def get(self, request, project_id: int, webhook_id: int):
        """The webhook's deliveries, newest first, each with its attempts."""
        webhook = _webhook(request, project_id, webhook_id)
        PageSerializer(data=request.query_params).is_valid(raise_exception=True)
        queryset = WebhookDelivery.objects.filter(webhook=webhook).order_by("-id").prefetch_related("attempts")
        return paginate(self, request, queryset, DeliverySerializer)


class WebhookRedeliverApi(APIView):
    @extend_schema(
        request=None,
        responses={
            202: DeliverySerializer,
            **error_responses(401, 404),
            409: OpenApiResponse(ErrorSerializer, description="The webhook is switched off or disabled."),
        },
    )
    def post(self, request, project_id: int, webhook_id: int, delivery_id: int):
        """Send the delivery again now, with the same `webhook-id`."""
        webhook = _webhook(request, project_id, webhook_id)
        delivery = get_object_or_404(WebhookDelivery, webhook=webhook, id=delivery_id)
        try:
            delivery = services.delivery_redeliver(delivery=delivery, actor=user_actor(request.user))
        except services.WebhookInactive as exc:
            raise Conflict(str(exc)) from None
        return Response(DeliverySerializer(delivery).data, status=status.HTTP_202_ACCEPTED)
