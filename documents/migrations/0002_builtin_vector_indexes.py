"""Partial HNSW indexes for the embedding models Mirage ships with. Projects
pinned to other models get theirs when the project is created."""
from django.db import migrations

from documents.vectorindex import BUILTIN_MODELS, create_index_statement, index_name


class Migration(migrations.Migration):
    dependencies = [("documents", "0001_initial")]

    operations = [
        migrations.RunSQL(
            sql=create_index_statement(model_id, dimensions),
            reverse_sql=f"DROP INDEX IF EXISTS {index_name(model_id, dimensions)}",
        )
        for model_id, dimensions in BUILTIN_MODELS.items()
    ]
