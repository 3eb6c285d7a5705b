"""The soak's API clients, each a thread with its own HTTP connection:
uploaders (multipart POSTs of Markdown documents), Server-Sent Events
listeners, and a reader of single documents. Times are wall-clock seconds
(time.time()), so they line up with what the workers record."""

from __future__ import annotations

import json
import random
import threading
import time
import traceback
from dataclasses import dataclass, field

import httpx

from bench.orchestration import make_document

REQUEST_TIMEOUT = 60.0
UPLOAD_ATTEMPTS = 5
# The reader asks for one document this often while the soak runs.
READ_INTERVAL_SECONDS = 0.25
# An SSE stream is asked to end after this many seconds, and reopened with
# Last-Event-ID: the soak also exercises resumption.
STREAM_SECONDS = 300


@dataclass
class Upload:
    at: float
    seconds: float
    status_code: int | None
    document_id: int | None


@dataclass
class Shared:
    """What the clients and the soak's monitor share: the documents
    uploaded so far, and the backlog the uploaders wait on."""

    backlog_limit: int
    document_ids: list[int] = field(default_factory=list)
    unfinished: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    backlog_changed: threading.Condition = field(init=False)
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.backlog_changed = threading.Condition(self.lock)

    def set_unfinished(self, count: int) -> None:
        with self.lock:
            self.unfinished = count
            self.backlog_changed.notify_all()

    def wait_for_room(self) -> None:
        """Block while `backlog_limit` documents or more are not final: the
        uploaders keep the pipeline busy without an unbounded queue."""
        with self.lock:
            while self.unfinished >= self.backlog_limit and not self.stop.is_set():
                self.backlog_changed.wait(timeout=1.0)
            # Counted now, so the other uploaders see it before the next
            # reading of the database.
            self.unfinished += 1

    def add_document(self, document_id: int) -> None:
        with self.lock:
            self.document_ids.append(document_id)

    def random_document(self) -> int | None:
        with self.lock:
            return random.choice(self.document_ids) if self.document_ids else None


class ClientThread(threading.Thread):
    """A client whose unexpected exception is kept (`crash`), so the soak
    stops on it instead of going on with a client less."""

    crash: str | None = None

    def run(self) -> None:
        try:
            self.work()
        except Exception:  # noqa: BLE001 - reported by the soak, which then stops
            self.crash = traceback.format_exc()

    def work(self) -> None:
        raise NotImplementedError


class Uploader(ClientThread):
    """Uploads documents numbered `numbers` to one project through
    POST /api/v1/projects/{id}/documents/, each `chunks` sections of
    distinct text (no embedding-cache hits)."""

    def __init__(self, *, base_url: str, token: str, project_id: int, numbers: range, chunks: int, shared: Shared):
        super().__init__(name=f"uploader-{numbers.start}", daemon=True)
        self.base_url, self.token, self.project_id = base_url, token, project_id
        self.numbers, self.chunks, self.shared = numbers, chunks, shared
        self.uploads: list[Upload] = []
        self.failures: list[str] = []

    def work(self) -> None:
        headers = {"Authorization": f"Token {self.token}"}
        with httpx.Client(base_url=self.base_url, headers=headers, timeout=REQUEST_TIMEOUT) as http:
            for number in self.numbers:
                if self.shared.stop.is_set():
                    return
                self.shared.wait_for_room()
                self._upload(http, number)

    def _upload(self, http: httpx.Client, number: int) -> None:
        content = make_document(chunks=self.chunks, seed=number + 1)
        path = f"/api/v1/projects/{self.project_id}/documents/"
        for attempt in range(1, UPLOAD_ATTEMPTS + 1):
            started = time.time()
            try:
                response = http.post(path, files={"file": (f"soak-{number}.md", content, "text/markdown")})
            except httpx.HTTPError as exc:
                self.failures.append(f"document {number}, attempt {attempt}: {type(exc).__name__}: {exc}")
                time.sleep(attempt)
                continue
            seconds = time.time() - started
            if response.status_code in (200, 201):
                document_id = response.json()["id"]
                self.uploads.append(Upload(started, seconds, response.status_code, document_id))
                self.shared.add_document(document_id)
                return
            self.uploads.append(Upload(started, seconds, response.status_code, None))
            self.failures.append(f"document {number}, attempt {attempt}: HTTP {response.status_code}")
            if response.status_code < 500:
                return
            time.sleep(attempt)


class SseListener(ClientThread):
    """Follows one project's event stream from its start until told to
    stop, reopening it with Last-Event-ID whenever it ends. Keeps the last
    `document.status` of every document, in stream order."""

    def __init__(self, *, base_url: str, token: str, project_id: int, stop: threading.Event):
        super().__init__(name=f"sse-{project_id}", daemon=True)
        self.base_url, self.token, self.project_id, self.stop = base_url, token, project_id, stop
        self.last_status: dict[int, str] = {}
        self.events: dict[str, int] = {}
        self.connections = 0
        self.errors: list[str] = []
        self.connected = threading.Event()
        self._last_id: str | None = None

    def work(self) -> None:
        timeout = httpx.Timeout(REQUEST_TIMEOUT, read=60.0)
        with httpx.Client(base_url=self.base_url, timeout=timeout) as http:
            while not self.stop.is_set():
                try:
                    self._follow(http)
                except httpx.HTTPError as exc:
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                    self.stop.wait(1.0)

    def _follow(self, http: httpx.Client) -> None:
        headers = {"Authorization": f"Token {self.token}", "Accept": "text/event-stream"}
        params = {"project": self.project_id, "timeout": STREAM_SECONDS}
        if self._last_id:
            headers["Last-Event-ID"] = self._last_id
        else:
            params["from"] = "start"
        with http.stream("GET", "/api/v1/events/", params=params, headers=headers) as response:
            if response.status_code != 200:
                self.errors.append(f"HTTP {response.status_code}")
                self.stop.wait(1.0)
                return
            self.connections += 1
            self.connected.set()
            fields: dict[str, list[str]] = {}
            # A keepalive comment arrives at least every 15 s, so a stop is
            # noticed within that.
            for line in response.iter_lines():
                if self.stop.is_set():
                    return
                if line == "":
                    self._record(fields)
                    fields = {}
                elif not line.startswith(":"):
                    name, _, value = line.partition(":")
                    fields.setdefault(name, []).append(value.removeprefix(" "))

    def _record(self, fields: dict[str, list[str]]) -> None:
        if "id" not in fields:
            return
        self._last_id = fields["id"][-1]
        event = fields.get("event", ["message"])[-1]
        self.events[event] = self.events.get(event, 0) + 1
        if event == "document.status":
            data = json.loads("\n".join(fields.get("data", [])))
            self.last_status[data["id"]] = data["status"]


class DocumentReader(ClientThread):
    """GET /api/v1/documents/{id}/ of a random uploaded document every
    READ_INTERVAL_SECONDS; records (time, seconds, status code)."""

    def __init__(self, *, base_url: str, token: str, shared: Shared):
        super().__init__(name="reader", daemon=True)
        self.base_url, self.token, self.shared = base_url, token, shared
        self.reads: list[tuple[float, float, int | str]] = []
        self.halt = threading.Event()

    def work(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=REQUEST_TIMEOUT) as http:
            while not self.halt.wait(READ_INTERVAL_SECONDS):
                document_id = self.shared.random_document()
                if document_id is not None:
                    self.reads.append(read_document(http, document_id, self.token))


def read_document(http: httpx.Client, document_id: int, token: str) -> tuple[float, float, int | str]:
    started = time.time()
    try:
        response = http.get(f"/api/v1/documents/{document_id}/", headers={"Authorization": f"Token {token}"})
    except httpx.HTTPError as exc:
        return started, time.time() - started, type(exc).__name__
    return started, time.time() - started, response.status_code
