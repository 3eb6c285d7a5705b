"""python manage.py resume (--project NAME | --all) [--reason WORDS]"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from common import pauses
from documents import services
from documents.management.commands.pause import OPERATOR, project_named


class Command(BaseCommand):
    help = "End a pause of a project's work, or of the whole deployment's; the work continues where it stopped."

    def add_arguments(self, parser):
        scope = parser.add_mutually_exclusive_group(required=True)
        scope.add_argument("--project", help="the project to resume (by name)")
        scope.add_argument("--all", action="store_true", help="resume the whole deployment")
        parser.add_argument("--reason", default="", help="why (recorded in the audit log)")

    def handle(self, *args, **options):
        try:
            if options["all"]:
                pause = services.deployment_resume(actor=OPERATOR, reason=options["reason"])
            else:
                pause = services.project_resume(
                    project=project_named(options["project"]), actor=OPERATOR, reason=options["reason"]
                )
        except pauses.NotPaused as exc:
            raise CommandError(str(exc)) from None
        scope = f"project {pause.project_id}" if pause.project_id is not None else "the deployment"
        self.stdout.write(f"resumed {scope} (paused since {pause.paused_at:%Y-%m-%d %H:%M:%S} UTC: {pause.reason})")
