from django.apps import AppConfig


class DocumentsConfig(AppConfig):
    name = "documents"
    verbose_name = "Documents"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from documents import jobkinds
        from documents.webhooks import services as webhooks

        jobkinds.register_all()
        webhooks.connect_signals()
