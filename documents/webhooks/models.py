"""A project's webhooks, the deliveries owed to them (one per event and
webhook, a durable outbox written in the transaction of the change it
announces) and each attempt to deliver one."""

from django.db import models
from django.db.models import Q

WEBHOOK_EVENTS = ["document.final", "job.final", "document.deleted"]
DELIVERY_STATES = ["pending", "delivered", "failed"]


class Webhook(models.Model):
    project = models.ForeignKey("documents.Project", on_delete=models.CASCADE, related_name="webhooks")
    url = models.URLField(max_length=2000)
    events = models.JSONField(default=list)
    description = models.CharField(max_length=500, blank=True, default="")
    active = models.BooleanField(default=True)
    # `whsec_` + base64 of the key; needed to sign, shown to the client once.
    secret = models.CharField(max_length=100)
    # Set by the first failed attempt after a success; a webhook failing for
    # longer than MIRAGE_WEBHOOK_DISABLE_AFTER_HOURS is disabled.
    failing_since = models.DateTimeField(null=True, blank=True)
    disabled_at = models.DateTimeField(null=True, blank=True)
    disabled_reason = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["project_id", "id"]
        indexes = [models.Index(fields=["project", "active"], name="webhook_project_active_idx")]

    def __str__(self) -> str:
        return f"{self.url} ({', '.join(self.events)})"


class WebhookDelivery(models.Model):
    """One event owed to one webhook. Its `message_id` is the `webhook-id`
    header of every attempt, so a receiver can drop duplicates."""

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Failed (gave up)"

    webhook = models.ForeignKey(Webhook, on_delete=models.CASCADE, related_name="deliveries")
    message_id = models.CharField(max_length=64, unique=True)
    event_type = models.CharField(max_length=32)
    # The exact bytes signed and sent, identical on every attempt.
    body = models.TextField()
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    attempt_count = models.PositiveIntegerField(default=0)
    # When the next attempt is due; an attempt in flight pushes it forward
    # by a lease, so two senders never attempt the same delivery at once.
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "webhook deliveries"
        constraints = [
            models.CheckConstraint(condition=Q(state__in=DELIVERY_STATES), name="webhook_delivery_state_valid"),
        ]
        indexes = [
            models.Index(fields=["next_attempt_at"], name="webhook_delivery_due_idx", condition=Q(state="pending")),
            models.Index(fields=["webhook", "id"], name="webhook_delivery_log_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} {self.message_id} -> webhook {self.webhook_id}"


class WebhookAttempt(models.Model):
    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="attempts")
    number = models.PositiveIntegerField()
    at = models.DateTimeField(auto_now_add=True)
    # The final URL reached (after redirects), or the one refused.
    url = models.URLField(max_length=2000)
    status_code = models.PositiveIntegerField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    response_excerpt = models.TextField(blank=True, default="")
    error = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["delivery_id", "number"]

    def __str__(self) -> str:
        return f"attempt {self.number} of {self.delivery_id}: {self.status_code or self.error[:40]}"
