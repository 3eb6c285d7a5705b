"""Mirage on five hosts with nothing shared but PostgreSQL and Redis on
`db`, and the network between them failing. Each fault runs over at least
20 documents with real workers; afterwards every document is final and
truthful (mirage_check clean), no chunk row is duplicated, nothing is lost,
and the time from the fault's end to all-final is recorded (printed at the
end of the run, kept in artifacts/test-figures.jsonl)."""

from __future__ import annotations

import time

import pytest

from tests.multihost.cluster import elapsed_since, write_documents
from tests.multihost.network import HOSTS
from tests.support import figures
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.multihost, pytest.mark.slow]

DOCUMENTS = 20
SECTIONS = 4
CUT_SECONDS = 60


def ingest(cluster, tmp_path, project: str) -> None:
    """The operator's `manage.py ingest` on the web host: the files are
    stored in PostgreSQL there and parsed on the ingest host."""
    documents = write_documents(tmp_path / project, count=DOCUMENTS, sections=SECTIONS, tag=project)
    cluster.manage("web", "ingest", str(documents), "--project", project, "--embedder", "hash")


def ready_chunks(cluster, project: str) -> int:
    try:
        return cluster.chunk_statuses(project).get("ready", 0)
    except Exception:  # noqa: BLE001 - the database may be restarting
        return 0


def wait_all_final(cluster, project: str, expected: int = DOCUMENTS) -> None:
    wait_until(
        lambda: cluster.all_final(project, expected),
        timeout=300,
        interval=0.5,
        message=f"every document of {project} final",
    )


def hold(seconds: float, watch) -> list:
    """Keep a fault in place for its duration, recording what `watch()`
    sees meanwhile with the time it saw it (the fault's length is the
    test's input, not a wait for the system)."""
    seen = []
    start = time.monotonic()
    end = start + seconds
    while time.monotonic() < end:
        seen.append((round(time.monotonic() - start, 1), watch()))
        time.sleep(min(1.0, max(0.0, end - time.monotonic())))
    return seen


def test_hosts_share_only_the_network_and_files_travel_through_the_database(healthy, tmp_path):
    cluster = healthy
    for host in HOSTS:
        routes = cluster.network.routes(host)
        assert "default" not in routes and routes.strip().startswith("10.231.0.0/24"), routes

    project_id = cluster.create_project("shared-nothing", "hash")
    body = b"# Estuaries\n\n## Tides\n\nTides move twice a day through the estuary mouth.\n"
    response = cluster.upload(project_id, "estuaries.md", body)
    assert response.status_code == 201, response.text
    document_id = response.json()["id"]
    wait_all_final(cluster, "shared-nothing", expected=1)
    assert cluster.statuses("shared-nothing") == {"ready": 1}

    reindex = cluster.network.call_in("client", _post_reindex, cluster, document_id)
    assert reindex.status_code == 202, reindex.text
    job_id = reindex.json()["id"]
    wait_until(
        lambda: cluster.query("SELECT status FROM jobs_job WHERE id = %s", (job_id,)) == [("completed",)],
        timeout=120,
        interval=0.5,
        message="the reindex job completed on the ingest host",
    )
    assert cluster.statuses("shared-nothing") == {"ready": 1}
    # Web and ingest each had their own empty MIRAGE_MEDIA_ROOT: it stayed empty.
    for host in ("web", "ingest"):
        assert list((cluster.workdir / f"media-{host}").rglob("*")) == []
    assert cluster.query("SELECT size FROM filestore_storedfile") == [(len(body),)]
    cluster.assert_settled("shared-nothing")


def _post_reindex(cluster, document_id: int):
    import httpx

    from tests.multihost.cluster import WEB_PORT
    from tests.multihost.network import address

    with httpx.Client(base_url=f"http://{address('web')}:{WEB_PORT}", timeout=60) as client:
        return client.post(
            f"/api/v1/documents/{document_id}/reindex/", headers={"Authorization": f"Token {cluster.token}"}
        )


def test_latency_and_packet_loss_between_the_embed_hosts_and_db_for_a_whole_run(healthy, tmp_path):
    cluster = healthy
    cluster.set_latency(100)  # each way: 200 ms round trip
    for host in ("embed-a", "embed-b"):
        cluster.network.lose(host, 5)
    started = time.monotonic()
    try:
        ingest(cluster, tmp_path, "slow-link")
        wait_all_final(cluster, "slow-link")
        under_fault = elapsed_since(started)
        dropped = sum(cluster.network.dropped_packets(host, "mrgloss") for host in ("embed-a", "embed-b"))
    finally:
        cluster.set_latency(0)
        for host in ("embed-a", "embed-b"):
            cluster.network.stop_losing(host)

    assert dropped > 0  # the loss really happened
    assert cluster.statuses("slow-link") == {"ready": DOCUMENTS}
    cluster.assert_settled("slow-link")
    figures.record(
        "multihost: 200 ms RTT + 5% loss embed<->db, whole run",
        documents=DOCUMENTS,
        chunks=sum(cluster.chunk_statuses("slow-link").values()),
        packets_dropped=dropped,
        seconds_to_all_final_under_fault=under_fault,
        seconds_from_fault_end_to_all_final=0.0,
    )


def test_embed_a_cut_from_db_for_60_seconds_mid_run(healthy, tmp_path):
    cluster = healthy
    ingest(cluster, tmp_path, "cut")
    wait_until(lambda: ready_chunks(cluster, "cut") >= 20, timeout=120, interval=0.2, message="20 chunks ready")
    at_cut = cluster.chunk_statuses("cut")
    cluster.network.cut("embed-a")
    cut_at = time.monotonic()
    try:
        during = hold(CUT_SECONDS, lambda: (ready_chunks(cluster, "cut"), cluster.all_final("cut", DOCUMENTS)))
        dropped = cluster.network.dropped_packets("embed-a", "mrgcut")
    finally:
        cluster.network.heal("embed-a")
    healed = time.monotonic()
    final_during_cut = [at for at, (_, final) in during if final]
    wait_all_final(cluster, "cut")
    recovery = 0.0 if final_during_cut else elapsed_since(healed)
    cut_to_final = final_during_cut[0] if final_during_cut else round(time.monotonic() - cut_at, 1)
    wait_until(
        lambda: any(node.startswith("embed-a@") for node in cluster.workers_answering()),
        timeout=120,
        interval=1,
        message="embed-a reconnected to the broker",
    )
    back = elapsed_since(healed)

    assert dropped > 0
    assert during[-1][1][0] > during[0][1][0]  # embed-b went on while embed-a was cut off
    assert cluster.statuses("cut") == {"ready": DOCUMENTS}
    cluster.assert_settled("cut")
    figures.record(
        "multihost: embed-a cut from db for 60 s mid-run",
        documents=DOCUMENTS,
        chunks=sum(cluster.chunk_statuses("cut").values()),
        chunks_at_cut=at_cut,
        packets_dropped=dropped,
        all_final_before_reconnect=bool(final_during_cut),
        seconds_from_cut_to_all_final=cut_to_final,
        seconds_from_fault_end_to_all_final=recovery,
        seconds_until_embed_a_answers_again=back,
    )


def test_web_cut_from_redis_while_clients_upload(healthy, tmp_path):
    cluster = healthy
    project_id = cluster.create_project("uploads", "hash")
    files = write_documents(tmp_path / "uploads", count=DOCUMENTS, sections=SECTIONS, tag="uploads")
    paths = sorted(files.iterdir())
    answers: dict[str, tuple[int, dict]] = {}

    def upload(path) -> None:
        response = cluster.upload(project_id, path.name, path.read_bytes())
        answers[path.name] = (response.status_code, response.json())

    for path in paths[:8]:
        upload(path)
    cluster.network.cut("web", port=6379)
    cut_at = time.monotonic()
    try:
        for path in paths[8:12]:
            upload(path)
        dropped = cluster.network.dropped_packets("web", "mrgcut")
    finally:
        cluster.network.heal("web")
    healed = time.monotonic()
    for path in paths[12:]:
        upload(path)

    codes = {name: code for name, (code, _) in answers.items()}
    assert set(codes.values()) <= {201, 503}, codes
    unavailable = [name for name, code in codes.items() if code == 503]
    for name in unavailable:
        assert "does not answer" in answers[name][1]["detail"]
        retried = cluster.upload(project_id, name, (files / name).read_bytes())
        assert retried.status_code in (200, 201), retried.text
    accepted = {answers[name][1]["id"] for name, code in codes.items() if code == 201}
    wait_all_final(cluster, "uploads")
    recovery = elapsed_since(healed)

    stored = {
        row[0]
        for row in cluster.query(
            "SELECT d.id FROM documents_document d JOIN documents_project p ON p.id = d.project_id WHERE p.name = %s",
            ("uploads",),
        )
    }
    assert accepted <= stored  # no upload that answered 201 is lost
    assert dropped > 0
    assert cluster.statuses("uploads") == {"ready": DOCUMENTS}
    cluster.assert_settled("uploads")
    figures.record(
        "multihost: web cut from Redis during uploads",
        documents=DOCUMENTS,
        uploads_during_cut=4,
        answered_201=len(accepted),
        answered_503=len(unavailable),
        packets_dropped=dropped,
        seconds_cut=round(healed - cut_at, 1),
        seconds_from_fault_end_to_all_final=recovery,
    )


def test_postgres_on_db_restarted_while_the_others_keep_running(healthy, tmp_path):
    cluster = healthy
    ingest(cluster, tmp_path, "restart")
    wait_until(lambda: ready_chunks(cluster, "restart") >= 20, timeout=120, interval=0.2, message="20 chunks ready")
    at_restart = cluster.chunk_statuses("restart")
    cluster.stop_database()
    cluster.start_database()
    restarted = time.monotonic()
    wait_all_final(cluster, "restart")
    recovery = elapsed_since(restarted)

    assert cluster.statuses("restart") == {"ready": DOCUMENTS}
    cluster.assert_settled("restart")
    figures.record(
        "multihost: db's PostgreSQL restarted",
        documents=DOCUMENTS,
        chunks=sum(cluster.chunk_statuses("restart").values()),
        chunks_at_restart=at_restart,
        seconds_from_fault_end_to_all_final=recovery,
    )


def test_every_process_of_embed_b_killed_at_once_and_never_restarted(healthy, tmp_path):
    cluster = healthy
    ingest(cluster, tmp_path, "power-loss")
    wait_until(lambda: ready_chunks(cluster, "power-loss") >= 20, timeout=120, interval=0.2, message="20 chunks ready")
    at_kill = cluster.chunk_statuses("power-loss")
    killed = cluster.kill_host("embed-b")
    killed_at = time.monotonic()
    wait_all_final(cluster, "power-loss")
    recovery = elapsed_since(killed_at)

    assert killed >= 1
    assert "embed-b" not in cluster.processes
    assert not any(node.startswith("embed-b@") for node in cluster.workers_answering())
    assert cluster.statuses("power-loss") == {"ready": DOCUMENTS}
    cluster.assert_settled("power-loss")
    figures.record(
        "multihost: every process of embed-b SIGKILLed, never restarted",
        documents=DOCUMENTS,
        chunks=sum(cluster.chunk_statuses("power-loss").values()),
        chunks_at_kill=at_kill,
        processes_killed=killed,
        seconds_from_fault_end_to_all_final=recovery,
    )
