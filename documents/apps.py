from django.apps import AppConfig


class DocumentsConfig(AppConfig):
    name = "documents"
    verbose_name = "Documents"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.conf import settings

        from documents import jobkinds
        from documents.parsers import ocr
        from documents.webhooks import services as webhooks

        jobkinds.register_all()
        webhooks.connect_signals()
        # Parsers are plain Python and never read Django settings themselves.
        ocr.configure(languages=settings.MIRAGE_OCR_LANGUAGES)
