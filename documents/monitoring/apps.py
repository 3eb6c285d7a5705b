from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    name = "documents.monitoring"
    label = "monitoring"
    verbose_name = "Monitoring"

    def ready(self) -> None:
        # Connects the Celery signal receivers (publish times, reconciler
        # runs, beat ticks, the start-up queue check) in every process that
        # loads Django: web, workers and beat alike.
        from documents.monitoring import recording  # noqa: F401
        from documents.monitoring.metrics import register_collector

        register_collector()
