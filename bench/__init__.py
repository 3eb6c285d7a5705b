"""Mirage benchmarks: `python -m bench` (or `make bench`) prints one table.

Each row sets a measured figure of the product beside a baseline taken in
the same run on the same machine (a no-op Celery chord, raw batched model
calls, an exact vector scan, an empty database, ...), and says whether the
ratio meets its goal. docs/benchmarks.md records a run and explains it.

Everything runs against a database (`mirage_bench`) and a Redis database
(11) of its own, never the developer's data; see `bench.env`.
"""
