"""The soak's results table from what bench.soak.run measured.

Windows: "the load" is from the first upload to the end of the last one,
while the uploaders keep the pipeline fed (the drain after it is reported
on its own). Throughput compares its first and last tenth, resident
memory its first and last quarter, reconciler ticks their first and last
few runs in it."""

from __future__ import annotations

from bench.report import Result
from bench.soak import figures

THROUGHPUT_GOAL = 0.9
RESIDENT_GROWTH_GOAL = 1.10
# Row 5's goal for a reconciler tick against a larger history.
TICK_GOAL = 2.0
TICKS_COMPARED = 5
# Roles whose memory carries the goal; the others are stated.
WORKERS = ("ingest", "maintenance", "embed")
MB = 1024 * 1024
RESULT_SHAPE = "celery-task-meta-<uuid>"


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f} ms"


def _ttl(seconds: int | None) -> str:
    if seconds is None:
        return "expired"
    if seconds == -1:
        return "no expiry"
    return f"expires within {seconds / 86400:.1f} d" if seconds >= 86400 else f"expires within {seconds} s"


def _before_or_after(seconds: float) -> str:
    return f"{-seconds:.0f} s before" if seconds < 0 else f"{seconds:.0f} s after"


def _mb(size: float | None) -> str:
    return "-" if size is None else f"{size / MB:.1f} MB"


def results(run: dict) -> list[Result]:
    start, end = run["load_started"], run["load_ended"]
    documents = len({upload["document_id"] for upload in run["uploads"] if upload["document_id"]})
    return [
        throughput(run, start, end),
        *redis_memory(run, documents),
        *postgres(run),
        *resident(run, start, end),
        api_reads(run, start, end),
        *reconciler_ticks(run, start, end),
        final_state(run, documents),
    ]


def throughput(run: dict, start: float, end: float) -> Result:
    samples = [(sample["at"], sample["chunks_final"]) for sample in run["samples"]]
    rates = figures.rates_by_part(samples, start, end, 10)
    first, last = (rates[0], rates[-1]) if rates else (None, None)
    change = figures.ratio(last, first)
    drain = run["all_final"] - end
    return Result(
        row=f"soak throughput: chunks finished per second, last tenth of the load vs first ({end - start:.0f} s of load)",
        measured="-" if last is None else f"{last:.1f} chunks/s",
        baseline="-" if first is None else f"{first:.1f} chunks/s",
        ratio=change,
        goal=f">= {THROUGHPUT_GOAL:.1f}",
        met=change is not None and change >= THROUGHPUT_GOAL,
        notes=[
            "per tenth: " + ", ".join(f"{rate:.1f}" for rate in rates) + " chunks/s; "
            f"{len(run['kills'])} SIGKILLs of the embed worker; drain after the last upload {drain:.0f} s"
        ],
    )


def redis_memory(run: dict, documents: int) -> list[Result]:
    redis = run["redis"]
    baseline, end = redis["baseline"], redis["end"]
    sampled_peak = max((sample["redis_used_memory"] for sample in run["samples"]), default=None)
    server = "its own server" if run["private_redis"] else "a shared server (used_memory counts other databases too)"
    # Reconcilers keep writing results after the end; those of the run are
    # counted by date instead.
    left = figures.per_document_families(end["families"], documents, ignore=[RESULT_SHAPE])
    stale_results = end["results_from_the_run"]
    families = ", ".join(
        f"{shape} {count} ({_ttl(end['longest_ttls'].get(shape))})" for shape, count in end["families"].items()
    )
    return [
        Result(
            row="soak Redis used_memory at its peak vs before the first upload",
            measured=_mb(sampled_peak),
            baseline=_mb(baseline["used_memory"]),
            ratio=figures.ratio(sampled_peak, baseline["used_memory"]),
            goal="stated",
            met=None,
            notes=[
                f"Redis is {server}; server's used_memory_peak {_mb(end['used_memory_peak'])}; "
                f"{redis['all_final']['keys']} keys when every document was final"
            ],
        ),
        Result(
            row=f"soak Redis after every document was final and results expired ({documents} documents)",
            measured=f"{end['keys']} keys, {_mb(end['used_memory'])}",
            baseline=f"{baseline['keys']} keys, {_mb(baseline['used_memory'])}",
            ratio=figures.ratio(end["used_memory"], baseline["used_memory"]),
            goal="nothing per document",
            met=not left and stale_results == 0,
            notes=[
                f"key families at the end: {families or 'none'}; with a key per document or more: "
                f"{', '.join(f'{shape} {count}' for shape, count in left.items()) or 'none'}; task results of "
                f"the run still stored: {stale_results}; unacknowledged messages: {end['unacked']}; keys' own "
                f"memory {_mb(end['key_bytes'])} ({_mb(baseline['key_bytes'])} before)"
            ],
        ),
    ]


def postgres(run: dict) -> list[Result]:
    tables = run["postgres"]
    chunk = tables["documents_chunk"]
    # The counter outlives TRUNCATE: only the runs during the soak count.
    runs = chunk["autovacuum_count"] - run["postgres_start"]["documents_chunk"]["autovacuum_count"]
    chunks = sum(run["truth"]["chunks"].values())
    dead_share = chunk["dead"] / (chunk["live"] + chunk["dead"]) if chunk["live"] + chunk["dead"] else None
    others = ", ".join(
        f"{name} {_mb(entry['total_bytes'])}" for name, entry in tables.items() if "total_bytes" in entry
    )
    return [
        Result(
            row=f"soak PostgreSQL bytes per chunk ({chunks} chunks): chunk table vs whole database",
            measured=f"{chunk['total_bytes'] / chunks:.0f} B",
            baseline=f"{tables['database']['total_bytes'] / chunks:.0f} B",
            ratio=None,
            goal="stated",
            met=None,
            notes=[
                f"chunk table: heap {_mb(chunk['heap_bytes'])}, indexes {_mb(chunk['index_bytes'])}, "
                f"with TOAST {_mb(chunk['total_bytes'])}; sizes: {others} (MIRAGE_FILE_STORAGE="
                f"{run['file_storage']}: with `database` the uploaded files are in the database)"
            ],
        ),
        Result(
            row="soak PostgreSQL dead tuples of the chunk table after autovacuum",
            measured="-" if dead_share is None else f"{dead_share * 100:.1f} %",
            baseline=f"{chunk['dead']} of {chunk['live'] + chunk['dead']}",
            ratio=None,
            goal="stated",
            met=None,
            notes=[
                f"autovacuum ran {runs} times on the chunk table during the soak"
                + (
                    f", the last {_before_or_after(chunk['last_autovacuum'] - run['all_final'])} "
                    "every document was final"
                    if runs
                    else ""
                )
                + (
                    "; below autovacuum's threshold at the end"
                    if run["vacuum_settled"]
                    else "; still above autovacuum's threshold when the soak stopped"
                )
            ],
        ),
    ]


def resident(run: dict, start: float, end: float) -> list[Result]:
    roles = sorted({role for sample in run["samples"] for role in sample["resident"]})
    found = []
    for role in roles:
        points = [(sample["at"], sample["resident"][role]) for sample in run["samples"] if role in sample["resident"]]
        first, last = figures.first_and_last(points, start, end, 0.25)
        growth = figures.ratio(last, first)
        goal = role in WORKERS
        found.append(
            Result(
                row=f"soak resident memory, {role}: median of the last quarter of the load vs the first",
                measured=_mb(last),
                baseline=_mb(first),
                ratio=growth,
                goal=f"<= {RESIDENT_GROWTH_GOAL:.2f}" if goal else "stated",
                met=(growth is not None and growth <= RESIDENT_GROWTH_GOAL) if goal else None,
                notes=_resident_notes(role, first, last, settings=run["settings"], load=end - start),
            )
        )
    return found


def _resident_notes(role: str, first, last, *, settings: dict, load: float) -> list[str]:
    notes = []
    if role == "embed":
        notes.append(
            "each incarnation of the embed worker lives one kill interval; the quarters' medians cover several"
        )
    if first is None or last is None:
        notes.append(
            f"no sample in the first or the last quarter of a {load:.0f}-s load (one every "
            f"{settings['sample_seconds']:.0f} s): run more documents"
        )
    return notes


def api_reads(run: dict, start: float, end: float) -> Result:
    loaded = [seconds for at, seconds, code in run["reads"] if start <= at <= end and code == 200]
    idle = [seconds for _, seconds, code in run["idle_reads"] if code == 200]
    failed = sum(1 for _, _, code in run["reads"] + run["idle_reads"] if code != 200)
    loaded_p95, idle_p95 = figures.percentile(loaded, 0.95), figures.percentile(idle, 0.95)
    return Result(
        row="soak API GET /api/v1/documents/{id}/ p95 under the load vs idle after it",
        measured=_ms(loaded_p95),
        baseline=_ms(idle_p95),
        ratio=figures.ratio(loaded_p95, idle_p95),
        goal="stated",
        met=None,
        notes=[
            f"{len(loaded)} reads under the load (p50 {_ms(figures.percentile(loaded, 0.5))}), {len(idle)} idle; "
            f"{failed} not answered 200; uploads: {len(run['uploads'])} answered, p95 "
            f"{_ms(figures.percentile([u['seconds'] for u in run['uploads']], 0.95))}, "
            f"{len(run['upload_failures'])} failed attempts"
        ],
    )


def reconciler_ticks(run: dict, start: float, end: float) -> list[Result]:
    """One row per reconciler that ran during the load: its first ticks
    (little history) against its last (the whole run's). Runs can be fewer
    than beat's periods (beat's messages expire after one period) when the
    maintenance worker falls behind."""
    found = []
    for name, interval in sorted(run["reconcile_intervals"].items()):
        points = [(tick["at"], tick["seconds"]) for tick in run["ticks"] if tick["reconciler"] == name]
        during = sum(1 for at, _ in points if start <= at <= end)
        if not during:
            continue
        first, last = figures.first_and_last_count(points, start, end, TICKS_COMPARED)
        enough = during >= 2 * TICKS_COMPARED
        change = figures.ratio(last, first)
        idle = figures.window_median(points, run["all_final"], run["ended"])
        found.append(
            Result(
                row=f"soak reconciler tick, {name}: median of its last {TICKS_COMPARED} ticks of the load vs its first",
                measured=_ms(last),
                baseline=_ms(first),
                ratio=change,
                # With fewer ticks the first and the last would overlap.
                goal=f"<= {TICK_GOAL:.0f}x" if enough else f"<= {TICK_GOAL:.0f}x (too few ticks)",
                met=(change is not None and change <= TICK_GOAL) if enough else None,
                notes=[
                    f"ran {during} times during the load (every {interval:.0f} s would be "
                    f"{(end - start) / interval:.0f}); median once every document was final: {_ms(idle)}"
                ],
            )
        )
    return found


def final_state(run: dict, documents: int) -> Result:
    truth, check = run["truth"], run["mirage_check"]
    final = sum(
        count for status, count in truth["documents"].items() if status in ("ready", "partial", "error", "cancelled")
    )
    chunks = sum(truth["chunks"].values())
    target = run["settings"]["documents"] * run["chunks_per_document"]
    sse = truth["sse"]
    met = (
        not run["timed_out"]
        and check["clean"]
        and final == documents == run["settings"]["documents"]
        and truth["documents_without_all_chunks"] == 0
        and chunks >= target
    )
    return Result(
        row="soak end state: documents final, chunks stored, mirage_check",
        measured=f"{final}/{documents} final, {chunks} chunks",
        baseline=f"{run['settings']['documents']} uploads, {target} chunks",
        ratio=None,
        goal="all final, mirage_check clean",
        met=met,
        notes=[
            f"documents by status {truth['documents']}; chunks by status {truth['chunks']}; documents without "
            f"all their chunks {truth['documents_without_all_chunks']}; mirage_check "
            f"{'clean' if check['clean'] else 'NOT clean: ' + check['output'][-500:]}; SSE: the last "
            f"document.status event agrees with the database for {sse['agree']} of {sse['documents']} documents "
            f"({sse['missing']} never seen)"
        ],
    )
