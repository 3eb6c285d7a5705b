"""The webhook and delivery pages: state shown (a disabled webhook says
why), the secret never shown, attempts listed, actions through the services."""

from __future__ import annotations

import pytest
from django.urls import reverse
from django.utils import timezone

from documents.webhooks import services as webhooks
from documents.webhooks.models import Webhook, WebhookAttempt, WebhookDelivery
from tests.admin.operators import make_operator
from tests.support.factories import make_project

pytestmark = [pytest.mark.unit, pytest.mark.django_db]


@pytest.fixture
def operator_client(client):
    client.force_login(make_operator())
    return client


@pytest.fixture
def hooked():
    webhook = webhooks.webhook_create(
        project=make_project(), url="https://hooks.example.org/in", events=["document.final"], actor="system"
    )
    delivery = WebhookDelivery.objects.create(
        webhook=webhook,
        message_id="msg_admin",
        event_type="document.final",
        body='{"type": "document.final"}',
        state="failed",
        attempt_count=1,
        last_status_code=500,
    )
    WebhookAttempt.objects.create(
        delivery=delivery,
        number=1,
        url=webhook.url,
        status_code=500,
        latency_ms=12,
        response_excerpt="receiver is down",
    )
    return webhook, delivery


def test_pages_show_state_and_attempts_but_never_the_secret(operator_client, hooked):
    webhook, delivery = hooked
    webhooks.webhook_disable(webhook=webhook, reason="failing since yesterday")
    listing = operator_client.get(reverse("admin:documents_webhook_changelist")).content.decode()
    assert "disabled: failing since yesterday" in listing
    page = operator_client.get(reverse("admin:documents_webhook_change", args=[webhook.id])).content.decode()
    assert webhook.secret not in page and webhook.secret not in listing
    deliveries = operator_client.get(reverse("admin:documents_webhookdelivery_changelist")).content.decode()
    assert "msg_admin" in deliveries
    detail = operator_client.get(reverse("admin:documents_webhookdelivery_change", args=[delivery.id]))
    assert detail.status_code == 200 and "receiver is down" in detail.content.decode()
    filtered = operator_client.get(reverse("admin:documents_webhook_changelist") + "?state=disabled")
    assert "hooks.example.org" in filtered.content.decode()


def test_switch_on_and_redeliver_go_through_the_services(operator_client, hooked):
    webhook, delivery = hooked
    webhooks.webhook_disable(webhook=webhook, reason="failing")
    operator_client.post(
        reverse("admin:documents_webhook_changelist"), {"action": "switch_on", "_selected_action": [webhook.id]}
    )
    webhook.refresh_from_db()
    assert webhook.active and webhook.disabled_at is None
    operator_client.post(
        reverse("admin:documents_webhookdelivery_changelist"),
        {"action": "redeliver", "_selected_action": [delivery.id]},
    )
    delivery.refresh_from_db()
    assert delivery.state == "pending" and delivery.next_attempt_at <= timezone.now()
    assert Webhook.objects.get(id=webhook.id).active
