"""Keyword search finds words inside text written without spaces (Chinese,
Japanese): the search vector also holds each such run's overlapping
character bigrams. PostgreSQL 16 cannot change a generated column's
expression, so the column and its index are built again."""

import django.contrib.postgres.indexes
import django.contrib.postgres.search
from django.db import migrations, models

# Runs of kana, CJK ideographs and half-width katakana; each becomes its
# bigrams in reading order (a one-character run stays as it is), so that a
# phrase of bigrams matches exactly the characters in a row.
CREATE_FUNCTION = r"""
CREATE OR REPLACE FUNCTION mirage_cjk_bigrams(input text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT AS $$
    SELECT coalesce(string_agg(CASE WHEN char_length(m.run[1]) = 1 THEN m.run[1]
                                    ELSE substr(m.run[1], i, 2) END, ' ' ORDER BY m.n, i), '')
      FROM regexp_matches(input, '[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f]+', 'g')
           WITH ORDINALITY AS m(run, n),
           LATERAL generate_series(1, greatest(char_length(m.run[1]) - 1, 1)) AS i
$$;
"""
DROP_FUNCTION = "DROP FUNCTION IF EXISTS mirage_cjk_bigrams(text);"


def search_vector():
    expression = django.contrib.postgres.search.SearchVector(
        "content", config="simple"
    ) + django.contrib.postgres.search.SearchVector(
        models.Func(models.F("content"), function="mirage_cjk_bigrams", output_field=models.TextField()),
        config="simple",
    )
    return models.GeneratedField(
        db_persist=True, expression=expression, output_field=django.contrib.postgres.search.SearchVectorField()
    )


class Migration(migrations.Migration):
    dependencies = [
        ("documents", "0006_chunk_offsets"),
    ]

    operations = [
        migrations.RunSQL(CREATE_FUNCTION, DROP_FUNCTION),
        migrations.RemoveIndex(model_name="chunk", name="chunk_search_vector_idx"),
        migrations.RemoveField(model_name="chunk", name="search_vector"),
        migrations.AddField(model_name="chunk", name="search_vector", field=search_vector()),
        migrations.AddIndex(
            model_name="chunk",
            index=django.contrib.postgres.indexes.GinIndex(fields=["search_vector"], name="chunk_search_vector_idx"),
        ),
    ]
