"""Copy an existing deployment's uploaded files from a directory (its old
MIRAGE_MEDIA_ROOT) into the configured storage, under the same names, so
that the file fields keep pointing at them.

Idempotent: a file already stored with the same size is skipped, one stored
with another size (an interrupted earlier run) is written again. Files the
directory does not have are listed, never invented."""

from __future__ import annotations

import sys
from pathlib import Path

from django.apps import apps
from django.conf import settings
from django.core.files import File
from django.core.files.storage import FileSystemStorage, default_storage
from django.core.management.base import BaseCommand, CommandError
from django.db import models

BAR_WIDTH = 28


def stored_names() -> list[str]:
    """Every file name a FileField of an installed model refers to."""
    names: set[str] = set()
    for model in apps.get_models():
        for field in model._meta.get_fields():
            if isinstance(field, models.FileField):
                names.update(
                    name
                    for name in model._default_manager.exclude(**{field.name: ""}).values_list(field.name, flat=True)
                    if name
                )
    return sorted(names)


def progress_line(done: int, total: int, copied: int, skipped: int, missing: int) -> str:
    filled = BAR_WIDTH * done // total if total else BAR_WIDTH
    bar = "#" * filled + "-" * (BAR_WIDTH - filled)
    percent = 100 * done // total if total else 100
    return f"[{bar}] {percent:3d}% {done}/{total} files: {copied} copied, {skipped} already stored, {missing} missing"


class Command(BaseCommand):
    help = "Copy uploaded files from a directory (default MIRAGE_MEDIA_ROOT) into the configured file storage."

    def add_arguments(self, parser):
        parser.add_argument("--source", default=settings.MEDIA_ROOT, help="the directory holding the old files")

    def handle(self, *args, **options):
        source_root = Path(options["source"]).resolve()
        if not source_root.is_dir():
            raise CommandError(f"{source_root} is not a directory")
        source = FileSystemStorage(location=source_root)
        target = default_storage
        if isinstance(target, FileSystemStorage) and Path(target.location).resolve() == source_root:
            raise CommandError(f"the configured storage already is {source_root}: nothing to copy")
        names = stored_names()
        interactive = self.stdout.isatty() if hasattr(self.stdout, "isatty") else sys.stdout.isatty()
        copied = skipped = 0
        missing: list[str] = []
        step = max(1, len(names) // 20)
        for done, name in enumerate(names, start=1):
            if not source.exists(name):
                missing.append(name)
            elif target.exists(name) and target.size(name) == source.size(name):
                skipped += 1
            else:
                if target.exists(name):
                    target.delete(name)
                with source.open(name, "rb") as handle:
                    saved = target.save(name, File(handle, name=name))
                if saved != name:
                    raise CommandError(f"the storage stored {name!r} as {saved!r}; stopping")
                copied += 1
            line = progress_line(done, len(names), copied, skipped, len(missing))
            if interactive:
                self.stdout.write("\r\x1b[2K" + line, ending="")
            elif done % step == 0 or done == len(names):
                self.stdout.write(line)
            self.stdout.flush()
        if interactive:
            self.stdout.write("")
        if not names:
            self.stdout.write(progress_line(0, 0, 0, 0, 0))
        for name in missing:
            self.stdout.write(self.style.WARNING(f"missing in {source_root}: {name}"))
        self.stdout.write(
            self.style.SUCCESS(f"done: {copied} copied, {skipped} already stored, {len(missing)} missing")
        )
