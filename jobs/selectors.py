from django.db.models import QuerySet

from common import scope
from jobs.models import Job


def jobs_for_user(user) -> QuerySet[Job]:
    """Jobs of the projects the user belongs to (all of them for staff)."""
    if user.is_staff:
        return Job.objects.all()
    return Job.objects.filter(project_id__in=scope.visible_project_ids(user))
