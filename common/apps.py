from django.apps import AppConfig


class CommonConfig(AppConfig):
    """Plumbing every Mirage app shares: status history and the audit log,
    live events, advisory locks, project scoping, API errors, admin widgets
    and table formatting. It imports no other Mirage app."""

    name = "common"
    verbose_name = "History and audit"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Registers the Bearer scheme with the OpenAPI schema generator.
        from common import authentication  # noqa: F401
