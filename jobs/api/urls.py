from django.urls import path

from jobs.api import views

urlpatterns = [
    path("jobs/", views.JobListApi.as_view(), name="job-list"),
    path("jobs/<int:job_id>/", views.JobDetailApi.as_view(), name="job-detail"),
    path("jobs/<int:job_id>/history/", views.JobHistoryApi.as_view(), name="job-history"),
    path("jobs/<int:job_id>/cancel/", views.JobCancelApi.as_view(), name="job-cancel"),
]
