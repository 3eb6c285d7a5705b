"""A Django storage backend that keeps file bytes in PostgreSQL, and a way to
give a parser a real path to a stored file whatever the backend.

Why the database by default: every web and worker host already reaches it,
so an upload stored by any web process can be parsed by an ingest worker on
any other machine with nothing else shared, and one database backup holds
the documents together with their chunks (one source of truth, restored in
one step). Operators who outgrow it set MIRAGE_FILE_STORAGE=s3 (see
docs/deployment.md); nothing else changes.

Files are written block by block as the upload is read, in one transaction
(a crash leaves no half-written file), and read back block by block.
"""

from __future__ import annotations

import io
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from django.core.files import File
from django.core.files.storage import Storage
from django.db import IntegrityError, transaction
from django.db.models.fields.files import FieldFile
from django.utils.deconstruct import deconstructible

from common.filestore.models import StoredBlock, StoredFile

# 1 MiB: few rows per file (50 for the largest upload) while a reader holds
# only one block in memory.
BLOCK_SIZE = 1024 * 1024


def _fixed_blocks(source, size: int) -> Iterator[bytes]:
    """`source`'s bytes in blocks of exactly `size` (the last may be shorter),
    whatever sizes its reads return."""
    pending = bytearray()
    while block := source.read(size - len(pending)):
        pending += block
        if len(pending) == size:
            yield bytes(pending)
            pending.clear()
    if pending:
        yield bytes(pending)


class BlockReader(io.RawIOBase):
    """A stored file read one block at a time, seekable."""

    def __init__(self, *, file_id: int, size: int, block_size: int) -> None:
        super().__init__()
        self._file_id = file_id
        self._size = size
        self._block_size = block_size
        self._position = 0
        self._block_index = -1
        self._block = b""

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        self._position = max(0, base + offset)
        return self._position

    def readinto(self, buffer) -> int:
        if self._position >= self._size:
            return 0
        index, offset = divmod(self._position, self._block_size)
        if index != self._block_index:
            data = StoredBlock.objects.filter(file_id=self._file_id, index=index).values_list("data", flat=True).first()
            if data is None:
                raise FileNotFoundError(f"stored file {self._file_id} has no block {index}")
            self._block, self._block_index = bytes(data), index
        piece = self._block[offset : offset + len(buffer)]
        buffer[: len(piece)] = piece
        self._position += len(piece)
        return len(piece)


@deconstructible
class DatabaseStorage(Storage):
    """Files as rows of fixed-size blocks in the default database."""

    # A file saved inside a transaction goes away with its rollback.
    transactional = True

    def __init__(self, block_size: int = BLOCK_SIZE) -> None:
        self.block_size = block_size

    def _open(self, name: str, mode: str = "rb") -> File:
        if "w" in mode or "a" in mode or "+" in mode:
            raise ValueError("stored files are written with save(), not opened for writing")
        row = StoredFile.objects.filter(name=name).values("id", "size", "block_size").first()
        if row is None:
            raise FileNotFoundError(f"no stored file named {name!r}")
        reader = io.BufferedReader(
            BlockReader(file_id=row["id"], size=row["size"], block_size=row["block_size"]),
            buffer_size=row["block_size"],
        )
        return File(reader, name=name)

    def _save(self, name: str, content) -> str:
        while True:
            try:
                with transaction.atomic():
                    self._write(name, content)
                return name
            except IntegrityError:
                # Another upload took the name between get_available_name()
                # and here: pick the next free one, as FileSystemStorage does.
                if not self.exists(name):
                    raise
                name = self.get_available_name(name)

    def _write(self, name: str, content) -> None:
        stored = StoredFile.objects.create(name=name, block_size=self.block_size)
        if getattr(content, "seekable", lambda: False)():
            content.seek(0)
        size = 0
        for index, block in enumerate(_fixed_blocks(content, self.block_size)):
            StoredBlock.objects.create(file=stored, index=index, data=block)
            size += len(block)
        StoredFile.objects.filter(id=stored.id).update(size=size)

    def delete(self, name: str) -> None:
        StoredFile.objects.filter(name=name).delete()

    def exists(self, name: str) -> bool:
        return StoredFile.objects.filter(name=name).exists()

    def size(self, name: str) -> int:
        size = StoredFile.objects.filter(name=name).values_list("size", flat=True).first()
        if size is None:
            raise FileNotFoundError(f"no stored file named {name!r}")
        return size

    def listdir(self, path: str) -> tuple[list[str], list[str]]:
        prefix = str(PurePosixPath(path)).strip("/")
        prefix = f"{prefix}/" if prefix and prefix != "." else ""
        directories, files = set(), []
        for name in StoredFile.objects.filter(name__startswith=prefix).values_list("name", flat=True):
            head, slash, _ = name[len(prefix) :].partition("/")
            if slash:
                directories.add(head)
            else:
                files.append(head)
        return sorted(directories), sorted(files)

    def get_created_time(self, name: str):
        created = StoredFile.objects.filter(name=name).values_list("created_at", flat=True).first()
        if created is None:
            raise FileNotFoundError(f"no stored file named {name!r}")
        return created

    get_modified_time = get_created_time

    def url(self, name: str) -> str:
        raise NotImplementedError("files stored in the database are not served by URL")


@contextmanager
def local_path(file: FieldFile) -> Iterator[Path]:
    """A path on this machine holding the stored file's bytes, for parsers
    that need one (PDF and EPUB libraries seek in a real file).

    A storage on the local disk gives its own path; any other (database,
    S3) is copied block by block into a temporary file, deleted on exit, so
    the file is never held whole in memory. A missing file raises
    FileNotFoundError.
    """
    try:
        own_path = file.storage.path(file.name)
    except NotImplementedError:
        own_path = None
    if own_path is not None:
        yield Path(own_path)
        return
    suffix = Path(file.name).suffix[:16]
    with tempfile.NamedTemporaryFile(prefix="mirage-parse-", suffix=suffix) as copy:
        with file.storage.open(file.name, "rb") as source:
            shutil.copyfileobj(source, copy, BLOCK_SIZE)
        copy.flush()
        yield Path(copy.name)
