"""python manage.py mirage_check [--repair]"""

from django.core.management.base import BaseCommand, CommandError

from documents import invariants


class Command(BaseCommand):
    help = (
        "Report every document whose status disagrees with its chunks, every stuck chunk and job; "
        "with --repair, fix them."
    )

    def add_arguments(self, parser):
        parser.add_argument("--repair", action="store_true")
        parser.add_argument(
            "--grace",
            type=float,
            default=None,
            help="seconds of inactivity before work counts as stuck (default: two reconcile periods)",
        )

    def handle(self, *args, **options):
        violations = invariants.find_violations(grace_seconds=options["grace"])
        for violation in violations:
            self.stdout.write(str(violation))
        if not violations:
            self.stdout.write(self.style.SUCCESS("no violations"))
            return
        if not options["repair"]:
            raise CommandError(f"{len(violations)} violation(s); run with --repair to fix")
        report = invariants.repair()
        for name, result in report.items():
            self.stdout.write(f"repair {name}: {result}")
        remaining = invariants.find_violations(grace_seconds=options["grace"])
        if remaining:
            for violation in remaining:
                self.stdout.write(str(violation))
            self.stdout.write(
                self.style.WARNING(
                    f"{len(remaining)} violation(s) remain (work re-dispatched finishes in the background)"
                )
            )
        else:
            self.stdout.write(self.style.SUCCESS("all repaired"))
