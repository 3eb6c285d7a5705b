"""Job kinds are registered by the apps that own them and checked when a job
is created, so the table no longer lists them. Deployments created before
this change still carry the old constraint: it is dropped here."""
from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("jobs", "0001_initial")]

    operations = [
        migrations.RunSQL("ALTER TABLE jobs_job DROP CONSTRAINT IF EXISTS job_kind_valid", migrations.RunSQL.noop),
    ]
