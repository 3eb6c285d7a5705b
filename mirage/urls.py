from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from mirage.health import HealthApi

api_v1 = [
    path("", include("documents.api.urls")),
    path("", include("jobs.api.urls")),
    path("events/", include("documents.api.events")),
]

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("healthz", HealthApi.as_view(), name="healthz"),
]

# Unmatched paths answer JSON like every API error, not Django's HTML page.
handler404 = "common.api.not_found"
