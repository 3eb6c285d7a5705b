"""Staff users as operators get them: staff with the model permissions the
admin pages check, not superusers, so the permission checks are exercised."""

from __future__ import annotations

from django.contrib.auth.models import Permission

from tests.support.factories import make_user

OPERATOR_PERMISSIONS = [
    ("documents", "view_project"),
    ("documents", "add_project"),
    ("documents", "change_project"),
    ("documents", "view_document"),
    ("documents", "add_document"),
    ("documents", "change_document"),
    ("documents", "view_webhook"),
    ("documents", "change_webhook"),
    ("documents", "view_webhookdelivery"),
    ("documents", "change_webhookdelivery"),
    ("jobs", "view_job"),
    ("jobs", "change_job"),
]


def make_operator(*, username: str | None = None, password: str = "pw-for-tests-123"):
    user = make_user(username=username, staff=True, password=password)
    for app_label, codename in OPERATOR_PERMISSIONS:
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    return user
