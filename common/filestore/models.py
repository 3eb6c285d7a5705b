"""The bytes of stored files, kept in PostgreSQL (see filestore/storage.py).

A file is a row naming it and rows of fixed-size blocks, so that it is
written while an upload streams in and read back block by block: no process
ever needs a whole file in memory, and every host that reaches the database
reads the same bytes.
"""

from __future__ import annotations

from django.db import models


class StoredFile(models.Model):
    name = models.CharField(max_length=500, unique=True)
    size = models.BigIntegerField(default=0)
    block_size = models.IntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name


class StoredBlock(models.Model):
    file = models.ForeignKey(StoredFile, on_delete=models.CASCADE, related_name="blocks")
    index = models.IntegerField()
    data = models.BinaryField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["file", "index"], name="stored_block_unique_index")]

    def __str__(self) -> str:
        return f"{self.file_id}#{self.index}"
