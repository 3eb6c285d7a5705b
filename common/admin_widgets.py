"""The small pieces every Mirage admin page shares: live badges and progress
bars, the id list of a progress feed, the read-only base."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime

from django.conf import settings
from django.contrib import admin
from django.contrib.auth import get_permission_codename
from django.db.models import Expression, Value
from django.http import HttpRequest, HttpResponseRedirect
from django.utils import formats, timezone
from django.utils.html import format_html
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.text import Truncator

EMPTY = "-"
DATETIME_FORMAT = "Y-m-d H:i:s"
# A progress request names at most this many objects; a changelist page
# shows 100, so this leaves room without letting one request scan the table.
MAX_LIVE_IDS = 500
LIVE_MEDIA_CSS = {"all": ["common/admin-live.css"]}
LIVE_MEDIA_JS = ["common/admin-live.js"]
# Extra context of the wide lists (documents, jobs): they give the navigation
# sidebar's 300 px to their columns, so a 1,280 px screen shows every column
# without scrolling sideways; the breadcrumbs still lead everywhere.
WIDE_LIST_CONTEXT = {"is_nav_sidebar_enabled": False}


def display_value(value) -> str:
    """A value as the admin shows it (datetimes in the current time zone)."""
    if value is None or value == "":
        return EMPTY
    if isinstance(value, datetime):
        # To the second: a run's steps are often seconds apart.
        return formats.date_format(timezone.template_localtime(value), DATETIME_FORMAT)
    return str(formats.localize(value))


def live_badge(*, url: str, object_id: int, status: str) -> str:
    return format_html(
        '<span class="mirage-badge mirage-badge--{status}" data-live-url="{url}" data-live-id="{id}" '
        'data-live-role="badge">{status}</span>',
        status=status,
        url=url,
        id=object_id,
    )


def live_progress(*, url: str, object_id: int, status: str, percent: int, label: str) -> str:
    return format_html(
        '<div class="mirage-progress mirage-progress--{status}" role="progressbar" aria-valuemin="0" '
        'aria-valuemax="100" aria-valuenow="{percent}" data-live-url="{url}" data-live-id="{id}" '
        'data-live-role="progress"><div class="mirage-progress__track">'
        '<div class="mirage-progress__bar" style="width: {percent}%"></div></div>'
        '<span class="mirage-progress__label">{label}</span></div>',
        status=status,
        percent=percent,
        url=url,
        id=object_id,
        label=label,
    )


def live_field(*, url: str, object_id: int, field: str, value) -> str:
    return format_html(
        '<span data-live-url="{url}" data-live-id="{id}" data-live-role="field" data-live-field="{field}">'
        "{value}</span>",
        url=url,
        id=object_id,
        field=field,
        value=display_value(value),
    )


def short_text(value: str, *, chars: int) -> str:
    """`value` cut to `chars` characters for a list cell; the whole text is
    the cell's tooltip."""
    if not value:
        return EMPTY
    return format_html('<span class="mirage-short" title="{}">{}</span>', value, Truncator(value).chars(chars))


# Set by the app that owns projects (documents registers it with its admin),
# so the job pages show project names without importing that app.
_project_name_expression: Callable[[str], Expression] | None = None


def register_project_name_expression(expression: Callable[[str], Expression]) -> None:
    """`expression(field)` annotates the name of the project whose id is in
    `field`, in the same query (a subquery, not a query per row)."""
    global _project_name_expression
    _project_name_expression = expression


def project_name_expression(field: str) -> Expression:
    if _project_name_expression is None:
        return Value("")
    return _project_name_expression(field)


def live_ids(request: HttpRequest) -> list[int]:
    """The ids of `?ids=1,2,3`; anything that is not an id is ignored."""
    ids = []
    for part in request.GET.get("ids", "").split(","):
        part = part.strip()
        if part.isdigit():
            ids.append(int(part))
    return ids[:MAX_LIVE_IDS]


def flower_task_url(task_id: str) -> str:
    return f"{settings.MIRAGE_FLOWER_URL.rstrip('/')}/task/{task_id}"


def pretty_json(value) -> str:
    return format_html('<pre class="mirage-pre">{}</pre>', json.dumps(value, indent=2, sort_keys=True, default=str))


class ReadOnlyModelAdmin(admin.ModelAdmin):
    """Rows change only through the services: the admin shows them and offers
    actions that call the services; it never saves a form over them."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_operate_permission(self, request: HttpRequest) -> bool:
        """Whether the user may run the actions: Django's `change` permission
        of the model, since the forms themselves are never editable."""
        codename = get_permission_codename("change", self.opts)
        return request.user.has_perm(f"{self.opts.app_label}.{codename}")

    def action_response(self, request: HttpRequest):
        """Back to the page the action was started from (a change page posts
        `_return_to`), or the changelist when there is none."""
        target = request.POST.get("_return_to", "")
        if target and url_has_allowed_host_and_scheme(
            target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
        ):
            return HttpResponseRedirect(target)
        return None
