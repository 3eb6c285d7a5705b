"""`python -m bench.soak` (`make soak`): the soak at ten times the size.

5,000 documents of 50 chunks (hash embedder) through the real pipeline
while API clients upload, SSE clients listen and the embed worker is
SIGKILLed every 2 minutes; then how throughput, Redis, PostgreSQL, the
processes' memory, API latency and the reconciler ticks held up, and
whether every document ended final and true. Not part of `make test`.

- run.py: the processes, the clients, the kills, the waits at the end
- clients.py: uploaders, SSE listeners, the document reader (httpx threads)
- sampling.py: readings over time and at the end (PostgreSQL, Redis, /proc)
- figures.py: the ratios, medians and key shapes (plain functions)
- report.py: the results table
"""
