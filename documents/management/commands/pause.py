"""python manage.py pause (--project NAME | --all) --reason WORDS"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from common import pauses
from documents import services
from documents.models import Project

OPERATOR = "operator:cli"


def project_named(name: str) -> Project:
    project = Project.objects.filter(name=name).first()
    if project is None:
        raise CommandError(f"no project named {name!r}")
    return project


class Command(BaseCommand):
    help = "Pause a project's work, or the whole deployment's: no new parse or embedding call starts."

    def add_arguments(self, parser):
        scope = parser.add_mutually_exclusive_group(required=True)
        scope.add_argument("--project", help="the project to pause (by name)")
        scope.add_argument("--all", action="store_true", help="pause the whole deployment")
        parser.add_argument("--reason", required=True, help="why; shown wherever the work says it is paused")

    def handle(self, *args, **options):
        reason = options["reason"].strip()
        if not reason:
            raise CommandError("--reason may not be blank")
        try:
            if options["all"]:
                pause = services.deployment_pause(reason=reason, actor=OPERATOR)
            else:
                pause = services.project_pause(project=project_named(options["project"]), reason=reason, actor=OPERATOR)
        except pauses.AlreadyPaused as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"paused: {pauses.pause_words(pause)}")
