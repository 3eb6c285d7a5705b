from django.apps import AppConfig


class FilestoreConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "common.filestore"
    label = "filestore"
    verbose_name = "Stored files"
