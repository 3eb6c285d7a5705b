from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from documents.monitoring.admin_views import system_page
from documents.monitoring.metrics import metrics_view
from mirage.health import HealthApi, livez, readyz

api_v1 = [
    path("", include("documents.api.urls")),
    path("", include("jobs.api.urls")),
    path("events/", include("documents.api.events")),
]

urlpatterns = [
    # Before admin/: the admin's catch-all would answer it otherwise.
    path("admin/system/", admin.site.admin_view(system_page), name="mirage-system"),
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("healthz", HealthApi.as_view(), name="healthz"),
    path("livez", livez, name="livez"),
    path("readyz", readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),
]

# Unmatched paths answer JSON like every API error, not Django's HTML page.
handler404 = "common.api.not_found"
