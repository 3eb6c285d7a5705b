"""Hook points other apps listen on, so that the app that owns a state change
never imports the apps that react to it (jobs knows nothing of documents).

Each signal is sent inside the transaction of the change it announces: a
receiver that writes rows commits or rolls back with the change, and one
that talks to the outside world defers that with `transaction.on_commit`.
"""

from django.dispatch import Signal

# A job's status changed. kwargs: job (the updated Job), previous (status).
job_status_changed = Signal()

# A document's status changed. kwargs: document (updated), previous (status).
document_status_changed = Signal()

# A document was deleted. kwargs: data (id, project_id, filename).
document_deleted = Signal()
