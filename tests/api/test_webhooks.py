"""Signed webhooks: every delivery verifies with the `standardwebhooks`
library, failed attempts are retried with the same `webhook-id`, the log
shows each attempt, and no URL may reach inside the network.

Traffic goes only to receivers started here on 127.0.0.0/8; refusals of
other addresses happen before any connection is opened."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone
from standardwebhooks.webhooks import Webhook as StandardWebhook

from common.models import AuditEntry
from documents import services
from documents.webhooks import network
from documents.webhooks import services as webhooks
from documents.webhooks.models import Webhook, WebhookDelivery
from tests.support.factories import markdown_document, submit_bytes
from tests.support.waiting import wait_until
from tests.support.webhook_receiver import WebhookReceiver


@pytest.fixture
def receiver():
    with WebhookReceiver() as server:
        yield server


@pytest.fixture
def allow_private(settings):
    settings.MIRAGE_WEBHOOK_ALLOW_PRIVATE = True
    settings.MIRAGE_WEBHOOK_RETRY_BASE_SECONDS = 0.2


def _create(api, project, url, events=("document.final", "job.final", "document.deleted")):
    response = api.post(f"/api/v1/projects/{project.id}/webhooks/", {"url": url, "events": list(events)}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def _verified(secret: str, received) -> dict:
    return StandardWebhook(secret).verify(received.body, received.headers)


# --- Delivery -----------------------------------------------------------------------------


@pytest.mark.e2e
def test_document_and_job_finals_arrive_signed_without_document_text(api, project, worker, receiver, allow_private):
    created = _create(api, project, receiver.url)
    assert created["secret"].startswith("whsec_")
    submission = submit_bytes(project, markdown_document(sections=2), "guide.md")
    wait_until(lambda: len(receiver.requests) >= 2, timeout=90, message="document.final and job.final")
    events = {}
    for received in receiver.requests:
        payload = _verified(created["secret"], received)
        events[payload["type"]] = payload
    document = events["document.final"]["data"]
    assert document["id"] == submission.document.id and document["status"] == "ready"
    assert document["chunk_counts"]["ready"] >= 1
    assert document["links"]["document"] == f"/api/v1/documents/{submission.document.id}/"
    job = events["job.final"]["data"]
    assert job["id"] == submission.job.id and job["status"] == "completed"
    # Ids, statuses, counts and links: never the document's text.
    assert all(b"currents, banks" not in received.body for received in receiver.requests)
    # The secret is shown once.
    again = api.get(f"/api/v1/projects/{project.id}/webhooks/{created['id']}/").json()
    assert "secret" not in again
    listed = api.get(f"/api/v1/projects/{project.id}/webhooks/").json()["results"]
    assert [hook["id"] for hook in listed] == [created["id"]] and "secret" not in listed[0]


@pytest.mark.e2e
def test_a_receiver_failing_three_times_gets_the_event_on_the_fourth_attempt_with_the_same_id(
    api, project, worker, receiver, allow_private
):
    created = _create(api, project, receiver.url, events=["document.deleted"])
    document = submit_bytes(project, b"plain words", "notes.txt").document
    receiver.script(500, 503, 502)
    services.document_delete(document=document, actor="system")
    delivery = wait_until(
        lambda: WebhookDelivery.objects.filter(webhook_id=created["id"], state="delivered").first(),
        timeout=90,
        message="delivered on the fourth attempt",
    )
    assert len(receiver.requests) == 4
    assert {received.headers["webhook-id"] for received in receiver.requests} == {delivery.message_id}
    for received in receiver.requests:
        payload = _verified(created["secret"], received)
        assert payload["type"] == "document.deleted" and payload["data"]["id"] == document.id
    log = api.get(f"/api/v1/projects/{project.id}/webhooks/{created['id']}/deliveries/").json()
    entry = log["results"][0]
    assert entry["webhook_message_id"] == delivery.message_id and entry["state"] == "delivered"
    assert [attempt["status_code"] for attempt in entry["attempts"]] == [500, 503, 502, 200]
    assert all(attempt["latency_ms"] is not None for attempt in entry["attempts"])
    assert entry["attempts"][0]["response_excerpt"] == "receiver is down"
    # The receiver is healthy again: the webhook is no longer failing.
    assert Webhook.objects.get(id=created["id"]).failing_since is None

    redelivered = api.post(
        f"/api/v1/projects/{project.id}/webhooks/{created['id']}/deliveries/{delivery.id}/redeliver/"
    )
    assert redelivered.status_code == 202
    wait_until(lambda: len(receiver.requests) == 5, timeout=60, message="redelivered")
    assert receiver.requests[4].headers["webhook-id"] == delivery.message_id
    _verified(created["secret"], receiver.requests[4])


@pytest.mark.e2e
def test_the_reconciler_sends_deliveries_that_are_due(project, user, worker, receiver, allow_private):
    webhook = webhooks.webhook_create(project=project, url=receiver.url, events=["document.deleted"], actor="system")
    document = submit_bytes(project, b"plain words", "notes.txt").document
    # As if the task sent on commit was lost: the row alone is enough.
    WebhookDelivery.objects.filter(webhook=webhook).delete()
    delivery = WebhookDelivery.objects.create(
        webhook=webhook,
        message_id="msg_lost",
        event_type="document.deleted",
        body=json.dumps({"type": "document.deleted", "data": {"id": document.id}}),
        next_attempt_at=timezone.now() + timedelta(hours=1),
    )
    assert webhooks.deliveries_send_due() == 0  # not due yet
    WebhookDelivery.objects.filter(id=delivery.id).update(next_attempt_at=timezone.now())
    assert webhooks.deliveries_send_due() == 1
    wait_until(
        lambda: WebhookDelivery.objects.get(id=delivery.id).state == "delivered",
        timeout=60,
        message="sent by the reconciler",
    )
    assert receiver.requests[0].headers["webhook-id"] == "msg_lost"


# --- Retry schedule and disabling ------------------------------------------------------------


@pytest.mark.unit
def test_the_retry_schedule_is_exponential_with_jitter_and_spans_more_than_a_day(settings):
    settings.MIRAGE_WEBHOOK_RETRY_BASE_SECONDS = 5
    delays = [webhooks.retry_delay(attempt) for attempt in range(1, 20)]
    for attempt, delay in enumerate(delays, start=1):
        nominal = min(5 * 2 ** (attempt - 1), settings.MIRAGE_WEBHOOK_RETRY_MAX_DELAY_SECONDS)
        assert 0.75 * nominal <= delay <= 1.25 * nominal
    assert len({round(webhooks.retry_delay(3), 6) for _ in range(20)}) > 1  # jittered
    assert settings.MIRAGE_WEBHOOK_RETRY_HOURS >= 24


@pytest.mark.unit
@pytest.mark.django_db
def test_a_webhook_failing_longer_than_the_limit_is_disabled_and_says_so(
    api, project, receiver, allow_private, settings
):
    settings.MIRAGE_WEBHOOK_DISABLE_AFTER_HOURS = 48
    webhook = webhooks.webhook_create(project=project, url=receiver.url, events=["document.deleted"], actor="system")
    Webhook.objects.filter(id=webhook.id).update(failing_since=timezone.now() - timedelta(hours=49))
    delivery = WebhookDelivery.objects.create(
        webhook=webhook, message_id="msg_x", event_type="document.deleted", body="{}", next_attempt_at=timezone.now()
    )
    receiver.script(500)
    assert webhooks.delivery_attempt(delivery_id=delivery.id) == "failed"
    shown = api.get(f"/api/v1/projects/{project.id}/webhooks/{webhook.id}/").json()
    assert shown["active"] is False and shown["disabled"] is True
    assert "MIRAGE_WEBHOOK_DISABLE_AFTER_HOURS" in shown["disabled_reason"]
    assert AuditEntry.objects.filter(project_id=project.id, action="webhook.disabled").exists()
    refused = api.post(f"/api/v1/projects/{project.id}/webhooks/{webhook.id}/deliveries/{delivery.id}/redeliver/")
    assert refused.status_code == 409 and "disabled" in refused.json()["detail"]
    switched_on = api.patch(
        f"/api/v1/projects/{project.id}/webhooks/{webhook.id}/", {"active": True}, format="json"
    ).json()
    assert switched_on["active"] is True and switched_on["disabled"] is False
    assert switched_on["failing_since"] is None


@pytest.mark.unit
@pytest.mark.django_db
def test_a_delivery_past_the_retry_window_gives_up(project, receiver, allow_private):
    webhook = webhooks.webhook_create(project=project, url=receiver.url, events=["document.deleted"], actor="system")
    delivery = WebhookDelivery.objects.create(
        webhook=webhook, message_id="msg_old", event_type="document.deleted", body="{}", next_attempt_at=timezone.now()
    )
    WebhookDelivery.objects.filter(id=delivery.id).update(created_at=timezone.now() - timedelta(hours=27))
    receiver.script(500)
    assert webhooks.delivery_attempt(delivery_id=delivery.id) == "failed"
    assert "gave up after 1 attempts" in WebhookDelivery.objects.get(id=delivery.id).last_error
    # A duplicate task finds nothing to do.
    assert webhooks.delivery_attempt(delivery_id=delivery.id) is None
    assert len(receiver.requests) == 1


@pytest.mark.unit
@pytest.mark.django_db
def test_projects_without_webhooks_record_no_deliveries(project):
    submission = submit_bytes(project, b"plain words", "notes.txt")
    services.document_delete(document=submission.document, actor="system")
    assert WebhookDelivery.objects.count() == 0


# --- Server-side request forgery ------------------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hook",
        "http://[::1]:9/hook",
        "http://10.0.0.1/hook",
        "http://10.200.3.4:8080/x",
        "http://169.254.169.254/latest/meta-data/",
        "http://192.168.1.1/",
        "http://172.16.0.1/",
        "http://0.0.0.0/",
        "http://[::ffff:10.0.0.1]/",
        "http://localhost:9/hook",
    ],
)
def test_internal_addresses_are_refused_before_any_connection(url, settings):
    settings.MIRAGE_WEBHOOK_ALLOW_PRIVATE = False
    with pytest.raises(network.UnsafeUrl):
        network.resolve_checked(url)
    outcome = network.post(url=url, body="{}", headers={})
    assert outcome.status_code is None and outcome.error.startswith("refused: ")


@pytest.mark.unit
def test_a_name_resolving_to_loopback_is_refused_and_the_receiver_sees_nothing(receiver, settings):
    settings.MIRAGE_WEBHOOK_ALLOW_PRIVATE = False
    url = receiver.url.replace("127.0.0.1", "localhost")
    outcome = network.post(url=url, body="{}", headers={})
    assert "refused" in outcome.error and "loopback" in outcome.error
    assert network.post(url=receiver.url, body="{}", headers={}).error.startswith("refused: ")
    assert receiver.requests == []


@pytest.mark.unit
def test_a_redirect_to_loopback_is_refused(receiver, settings, monkeypatch):
    """A receiver on 127.0.0.2 stands in for a public host (the test may
    reach nothing else); it redirects to the loopback receiver on
    127.0.0.1, which must never be reached."""
    settings.MIRAGE_WEBHOOK_ALLOW_PRIVATE = False
    original = network.address_refusal
    monkeypatch.setattr(
        network, "address_refusal", lambda address: None if str(address) == "127.0.0.2" else original(address)
    )
    with WebhookReceiver(host="127.0.0.2") as public:
        for target in (receiver.url, receiver.url.replace("127.0.0.1", "localhost"), "http://169.254.169.254/"):
            public.script(target)
            outcome = network.post(url=public.url, body="{}", headers={"webhook-id": "msg_1"})
            assert outcome.status_code is None and outcome.error.startswith("refused: "), outcome
        assert len(public.requests) == 3
    assert receiver.requests == []


@pytest.mark.unit
def test_redirects_are_followed_with_the_same_signed_request(receiver, settings):
    settings.MIRAGE_WEBHOOK_ALLOW_PRIVATE = True
    with WebhookReceiver(host="127.0.0.2") as first:
        first.script(receiver.url)
        outcome = network.post(url=first.url, body='{"a": 1}', headers={"webhook-id": "msg_2"})
    assert outcome.status_code == 200 and outcome.url == receiver.url
    assert receiver.requests[0].headers["webhook-id"] == "msg_2" and receiver.requests[0].body == b'{"a": 1}'


@pytest.mark.unit
@pytest.mark.django_db
@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x",
        "http://10.1.2.3/",
        "http://169.254.169.254/",
        "http://localhost/",
        "ftp://example.org/",
        "http://user:pw@example.org/",
    ],
)
def test_the_api_refuses_internal_or_odd_urls(api, project, url, settings):
    settings.MIRAGE_WEBHOOK_ALLOW_PRIVATE = False
    response = api.post(
        f"/api/v1/projects/{project.id}/webhooks/", {"url": url, "events": ["job.final"]}, format="json"
    )
    assert response.status_code == 400 and "url" in response.json()


@pytest.mark.unit
@pytest.mark.django_db
def test_webhook_changes_are_in_the_audit_log(api, project):
    created = _create(api, project, "https://hooks.example.org/mirage", events=["job.final"])
    api.patch(f"/api/v1/projects/{project.id}/webhooks/{created['id']}/", {"description": "ci"}, format="json")
    assert api.delete(f"/api/v1/projects/{project.id}/webhooks/{created['id']}/").status_code == 204
    actions = list(AuditEntry.objects.filter(project_id=project.id).values_list("action", flat=True))
    assert {"webhook.created", "webhook.updated", "webhook.deleted"} <= set(actions)
