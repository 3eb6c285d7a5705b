"""Operators' view of webhooks and their deliveries. Rows change only
through documents.webhooks.services (switch on or off, redeliver)."""

from __future__ import annotations

from django.contrib import admin, messages

from common import history
from common.admin_widgets import ReadOnlyModelAdmin
from documents.webhooks import services
from documents.webhooks.models import Webhook, WebhookAttempt, WebhookDelivery


class WebhookStateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [
            ("active", "Active"),
            ("failing", "Failing"),
            ("disabled", "Disabled after failing"),
            ("off", "Switched off"),
        ]

    def queryset(self, request, queryset):
        value = self.value()
        if value == "active":
            return queryset.filter(active=True, failing_since__isnull=True)
        if value == "failing":
            return queryset.filter(active=True, failing_since__isnull=False)
        if value == "disabled":
            return queryset.filter(active=False, disabled_at__isnull=False)
        if value == "off":
            return queryset.filter(active=False, disabled_at__isnull=True)
        return queryset


@admin.register(Webhook)
class WebhookAdmin(ReadOnlyModelAdmin):
    list_display = ["id", "project", "url", "event_list", "state", "failing_since", "created_at"]
    list_filter = [WebhookStateFilter, "project"]
    search_fields = ["url", "description"]
    # The secret stays out of the admin: it was shown to the client once.
    fields = [
        "project",
        "url",
        "events",
        "description",
        "active",
        "failing_since",
        "disabled_at",
        "disabled_reason",
        "created_at",
        "updated_at",
    ]
    actions = ["switch_on", "switch_off"]

    @admin.display(description="events")
    def event_list(self, webhook: Webhook) -> str:
        return ", ".join(webhook.events)

    @admin.display(description="state")
    def state(self, webhook: Webhook) -> str:
        if webhook.active:
            return "failing" if webhook.failing_since else "active"
        return f"disabled: {webhook.disabled_reason}" if webhook.disabled_at else "switched off"

    def get_actions(self, request):
        actions = super().get_actions(request)
        if not self.has_operate_permission(request):
            actions.pop("switch_on", None)
            actions.pop("switch_off", None)
        return actions

    @admin.action(description="Switch on (clears a disabled webhook's failure record)")
    def switch_on(self, request, queryset):
        for webhook in queryset:
            services.webhook_update(webhook=webhook, actor=history.operator_actor(request.user), active=True)
        self.message_user(request, f"{queryset.count()} webhook(s) switched on.", messages.SUCCESS)

    @admin.action(description="Switch off")
    def switch_off(self, request, queryset):
        for webhook in queryset:
            services.webhook_update(webhook=webhook, actor=history.operator_actor(request.user), active=False)
        self.message_user(request, f"{queryset.count()} webhook(s) switched off.", messages.SUCCESS)


class WebhookAttemptInline(admin.TabularInline):
    model = WebhookAttempt
    extra = 0
    can_delete = False
    fields = ["number", "at", "url", "status_code", "latency_ms", "response_excerpt", "error"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_view_permission(self, request, obj=None) -> bool:
        # Attempts are part of their delivery: whoever may see it sees them.
        return request.user.has_perm("documents.view_webhookdelivery")


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyModelAdmin):
    list_display = [
        "id",
        "webhook",
        "event_type",
        "message_id",
        "state",
        "attempt_count",
        "last_status_code",
        "next_attempt_at",
        "created_at",
    ]
    list_filter = ["state", "event_type"]
    search_fields = ["message_id"]
    list_select_related = ["webhook"]
    fields = [
        "webhook",
        "message_id",
        "event_type",
        "state",
        "attempt_count",
        "next_attempt_at",
        "last_status_code",
        "last_error",
        "created_at",
        "finished_at",
        "body",
    ]
    inlines = [WebhookAttemptInline]
    actions = ["redeliver"]

    def get_actions(self, request):
        actions = super().get_actions(request)
        if not self.has_operate_permission(request):
            actions.pop("redeliver", None)
        return actions

    @admin.action(description="Redeliver now (same webhook-id)")
    def redeliver(self, request, queryset):
        sent = 0
        for delivery in queryset:
            try:
                services.delivery_redeliver(delivery=delivery, actor=history.operator_actor(request.user))
                sent += 1
            except services.WebhookInactive as exc:
                self.message_user(request, str(exc), messages.WARNING)
        self.message_user(request, f"{sent} delivery(ies) sent again.", messages.SUCCESS)
