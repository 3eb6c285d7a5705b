"""The database storage: bytes written and read block by block, names that
never collide, deletion, a local copy for parsers, and the import of an
older deployment's media directory."""

from __future__ import annotations

import io
import os
import tracemalloc
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage, default_storage
from django.core.management import call_command

from common.filestore.models import StoredBlock, StoredFile
from common.filestore.storage import DatabaseStorage, local_path
from documents.models import Document
from tests.support.factories import make_project, markdown_document, submit_bytes

pytestmark = pytest.mark.django_db


def test_the_default_storage_keeps_uploads_in_the_database():
    assert isinstance(default_storage, DatabaseStorage)
    document = submit_bytes(make_project(), markdown_document(), "guide.md").document
    assert StoredFile.objects.filter(name=document.file.name, size=document.size_bytes).exists()
    with document.file.open("rb") as handle:
        assert handle.read() == markdown_document()


def test_an_upload_that_fails_after_its_bytes_are_written_leaves_no_stored_file(monkeypatch):
    from documents.services import uploads

    project = make_project()
    before = StoredFile.objects.count()

    def job_creation_fails(**_):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(uploads, "_queue_indexing", job_creation_fails)
    with pytest.raises(RuntimeError):
        submit_bytes(project, markdown_document(), "guide.md")
    assert StoredFile.objects.count() == before
    assert not Document.objects.filter(project=project).exists()


def test_a_file_is_written_in_fixed_blocks_and_read_back_at_any_offset():
    storage = DatabaseStorage(block_size=1000)
    data = os.urandom(4321)
    name = storage.save("a/b/file.bin", ContentFile(data))
    assert name == "a/b/file.bin"
    blocks = list(StoredBlock.objects.filter(file__name=name).order_by("index").values_list("data", flat=True))
    assert [len(block) for block in blocks] == [1000, 1000, 1000, 1000, 321]
    assert storage.size(name) == 4321
    with storage.open(name) as handle:
        assert handle.read(10) == data[:10]
        handle.seek(2995)
        assert handle.read(10) == data[2995:3005]
        handle.seek(-21, io.SEEK_END)
        assert handle.read() == data[-21:]
        handle.seek(0)
        assert handle.read() == data
    assert storage.listdir("a") == (["b"], [])
    assert storage.listdir("a/b") == ([], ["file.bin"])


def test_short_reads_still_make_full_blocks():
    class Trickle(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self.data = io.BytesIO(data)

        def readinto(self, buffer) -> int:
            piece = self.data.read(min(7, len(buffer)))
            buffer[: len(piece)] = piece
            return len(piece)

        def readable(self) -> bool:
            return True

    storage = DatabaseStorage(block_size=100)
    data = os.urandom(250)
    name = storage.save("trickle.bin", Trickle(data))
    assert list(StoredBlock.objects.filter(file__name=name).order_by("index").values_list("index", flat=True)) == [
        0,
        1,
        2,
    ]
    with storage.open(name) as handle:
        assert handle.read() == data


def test_the_same_name_twice_gets_a_free_name_and_never_overwrites():
    first = default_storage.save("same.txt", ContentFile(b"one"))
    second = default_storage.save("same.txt", ContentFile(b"two"))
    assert first == "same.txt" and second != first
    assert default_storage.open(first).read() == b"one"
    assert default_storage.open(second).read() == b"two"


def test_deleting_removes_every_block_and_a_missing_file_says_so():
    name = default_storage.save("gone.txt", ContentFile(b"x" * 3_000_000))
    default_storage.delete(name)
    assert not default_storage.exists(name)
    assert not StoredBlock.objects.exists()
    with pytest.raises(FileNotFoundError):
        default_storage.open(name)
    with pytest.raises(FileNotFoundError):
        default_storage.size(name)


def test_storing_and_copying_out_a_large_file_never_holds_it_whole_in_memory():
    data = os.urandom(16 * 1024 * 1024 + 17)  # allocated before measuring
    # Once before measuring, so that first-use caches (SQL compilers,
    # adapters) are not counted as the file's.
    warm = default_storage.save("warm-up.bin", ContentFile(os.urandom(1024 * 1024 + 1)))
    with local_path(Document(file=warm).file) as path:
        path.stat()
    tracemalloc.start()
    try:
        name = default_storage.save("big/scan.pdf", ContentFile(data))
        _, peak_storing = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        with local_path(Document(file=name).file) as path:
            _, peak_copying = tracemalloc.get_traced_memory()
            copied_at = path
            assert path.suffix == ".pdf"
            assert path.stat().st_size == len(data)
    finally:
        tracemalloc.stop()
    assert not copied_at.exists()  # the temporary copy is gone
    with default_storage.open(name) as handle:
        assert handle.read() == data
    # Copies of a few 1 MiB blocks at a time (the database driver's
    # escaping included: about 9 MB whatever the file's size), never the
    # whole 16 MB file.
    assert peak_storing < 12 * 1024 * 1024, peak_storing
    assert peak_copying < 12 * 1024 * 1024, peak_copying


def test_a_local_copy_of_a_missing_file_is_file_not_found():
    field = Document(file="nowhere/missing.md").file
    with pytest.raises(FileNotFoundError), local_path(field):
        pass


def test_a_filesystem_storage_gives_its_own_path(tmp_path):
    storage = FileSystemStorage(location=tmp_path)
    name = storage.save("on-disk.md", ContentFile(b"# on disk"))
    field = Document(file=name).file
    field.storage = storage
    with local_path(field) as path:
        assert path == tmp_path / "on-disk.md"
    assert (tmp_path / "on-disk.md").exists()


def test_importing_a_media_directory_is_idempotent_and_lists_what_is_missing(tmp_path):
    project = make_project()
    submitted = [submit_bytes(project, markdown_document(sections=n + 1), f"doc-{n}.md").document for n in range(3)]
    documents = [Document.objects.get(id=document.id) for document in submitted]
    media = tmp_path / "media"
    # An older deployment: the rows point at files in its media root.
    for document in documents[:2]:
        target = media / document.file.name
        target.parent.mkdir(parents=True, exist_ok=True)
        with document.file.open("rb") as handle:
            target.write_bytes(handle.read())
    StoredFile.objects.all().delete()
    # An interrupted earlier run left a truncated copy of the first file.
    default_storage.save(documents[0].file.name, ContentFile(b"trunc"))

    out = io.StringIO()
    call_command("filestore_import", "--source", str(media), stdout=out)
    assert "2 copied, 0 already stored, 1 missing" in out.getvalue()
    assert f"missing in {media}: {documents[2].file.name}" in out.getvalue()
    assert "[" + "#" * 28 + "] 100%" in out.getvalue()
    for document in documents[:2]:
        with default_storage.open(document.file.name) as handle:
            assert handle.read() == (media / document.file.name).read_bytes()

    again = io.StringIO()
    call_command("filestore_import", "--source", str(media), stdout=again)
    assert "0 copied, 2 already stored, 1 missing" in again.getvalue()
    assert StoredFile.objects.count() == 2


def test_importing_from_a_directory_that_does_not_exist_is_a_clear_error(tmp_path):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="is not a directory"):
        call_command("filestore_import", "--source", str(Path(tmp_path) / "nope"))


def test_s3_is_configured_through_django_storages_when_the_operator_asks(monkeypatch):
    from django.core.exceptions import ImproperlyConfigured
    from django.utils.module_loading import import_string

    import mirage.settings as project_settings

    with pytest.raises(ImproperlyConfigured, match="MIRAGE_S3_BUCKET"):
        project_settings._file_storage("s3")
    monkeypatch.setattr(project_settings, "MIRAGE_S3_BUCKET", "mirage-uploads")
    monkeypatch.setattr(project_settings, "MIRAGE_S3_ENDPOINT_URL", "https://objects.example.internal")
    config = project_settings._file_storage("s3")
    storage = import_string(config["BACKEND"])(**config["OPTIONS"])
    assert storage.bucket_name == "mirage-uploads"
    assert storage.endpoint_url == "https://objects.example.internal"
    assert storage.file_overwrite is False
    with pytest.raises(NotImplementedError):
        storage.path("projects/1/a.pdf")  # so parsing goes through local_path's copy
    with pytest.raises(ImproperlyConfigured, match="database, s3 or filesystem"):
        project_settings._file_storage("nfs")
