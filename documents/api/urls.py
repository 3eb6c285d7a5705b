from django.urls import path

from documents.api import views
from documents.webhooks import api as webhooks

urlpatterns = [
    path("projects/", views.ProjectListApi.as_view(), name="project-list"),
    path("projects/<int:project_id>/", views.ProjectDetailApi.as_view(), name="project-detail"),
    path("projects/<int:project_id>/documents/", views.ProjectDocumentsApi.as_view(), name="project-documents"),
    path("projects/<int:project_id>/imports/", views.ProjectImportApi.as_view(), name="project-imports"),
    path("projects/<int:project_id>/audit/", views.ProjectAuditApi.as_view(), name="project-audit"),
    path("projects/<int:project_id>/embedder/", views.ProjectEmbedderApi.as_view(), name="project-embedder"),
    path("projects/<int:project_id>/search/", views.ProjectSearchApi.as_view(), name="project-search"),
    path("projects/<int:project_id>/webhooks/", webhooks.WebhookListApi.as_view(), name="project-webhooks"),
    path(
        "projects/<int:project_id>/webhooks/<int:webhook_id>/",
        webhooks.WebhookDetailApi.as_view(),
        name="webhook-detail",
    ),
    path(
        "projects/<int:project_id>/webhooks/<int:webhook_id>/deliveries/",
        webhooks.WebhookDeliveriesApi.as_view(),
        name="webhook-deliveries",
    ),
    path(
        "projects/<int:project_id>/webhooks/<int:webhook_id>/deliveries/<int:delivery_id>/redeliver/",
        webhooks.WebhookRedeliverApi.as_view(),
        name="webhook-redeliver",
    ),
    path("projects/<int:project_id>/pause/", views.ProjectPauseApi.as_view(), name="project-pause"),
    path("projects/<int:project_id>/resume/", views.ProjectResumeApi.as_view(), name="project-resume"),
    path("system/pause/", views.SystemPauseApi.as_view(), name="system-pause"),
    path("system/resume/", views.SystemResumeApi.as_view(), name="system-resume"),
    path("documents/<int:document_id>/", views.DocumentDetailApi.as_view(), name="document-detail"),
    path("documents/<int:document_id>/history/", views.DocumentHistoryApi.as_view(), name="document-history"),
    path("documents/<int:document_id>/chunks/", views.DocumentChunksApi.as_view(), name="document-chunks"),
    path("documents/<int:document_id>/reindex/", views.DocumentReindexApi.as_view(), name="document-reindex"),
    path("documents/<int:document_id>/retry/", views.DocumentRetryApi.as_view(), name="document-retry"),
]
