"""A scriptable fake embedding server on 127.0.0.1 for provider tests.

It speaks Ollama's POST /api/embed and OpenAI's POST /v1/embeddings, records
every request, and answers each request with the next scripted `Reply`, or
with a correct embedding response once the script runs out:

    with FakeEmbeddingServer(dimensions=8) as server:
        server.script(Reply.rate_limited(retry_after="2"), Reply.error(500, "busy"))
        ...  # point a provider at server.ollama_url or server.openai_base_url
        assert len(server.requests) == 3

OpenAI answers list their items in reverse index order (the API promises
an "index" per item, not an order), so clients that trust the order fail.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


def fake_vector(text: str, dimensions: int) -> list[float]:
    """The vector the fake server returns for `text`: deterministic, and
    different for different texts, so a test can tell which came back where."""
    seed = int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big")
    generator = random.Random(seed)
    return [generator.uniform(-1.0, 1.0) for _ in range(dimensions)]


@dataclass
class Reply:
    """One scripted answer. With `body` None the server sends the correct
    wire-format answer for the path, shaped by `dimensions` (vector length)
    and `drop_vectors` (vectors left out)."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    dimensions: int | None = None
    drop_vectors: int = 0
    raw: bytes | None = None

    @classmethod
    def rate_limited(cls, *, retry_after: str | None = "1") -> Reply:
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        return cls(
            status=429,
            body={"error": {"message": "Rate limit reached", "type": "requests"}},
            headers=headers,
        )

    @classmethod
    def error(cls, status: int, message: str, *, style: str = "openai") -> Reply:
        """`style` "openai" nests the message ({"error": {"message": ...}}),
        "ollama" does not ({"error": ...})."""
        body = {"error": {"message": message, "type": "invalid_request_error"}}
        if style == "ollama":
            body = {"error": message}
        return cls(status=status, body=body)

    @classmethod
    def hang(cls, seconds: float) -> Reply:
        """Answer correctly, but only after `seconds` (or when the server stops)."""
        return cls(delay=seconds)

    @classmethod
    def wrong_dimensions(cls, dimensions: int) -> Reply:
        return cls(dimensions=dimensions)


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    json: Any


FAKE_DIMENSIONS = 8


class FakeEmbeddingServer:
    """A ThreadingHTTPServer on an ephemeral loopback port, run in a daemon
    thread between `start()` and `stop()` (or as a context manager)."""

    def __init__(self, *, dimensions: int = FAKE_DIMENSIONS) -> None:
        self.dimensions = dimensions
        self.requests: list[RecordedRequest] = []
        self._replies: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "server not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def ollama_url(self) -> str:
        return self.url

    @property
    def openai_base_url(self) -> str:
        return self.url + "/v1"

    def script(self, *replies: Reply) -> None:
        """Queue answers for the next requests, in order."""
        with self._lock:
            self._replies.extend(replies)

    def start(self) -> FakeEmbeddingServer:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        # Releases handlers still hanging on a Reply.hang before shutdown.
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _record_and_pick(self, request: RecordedRequest) -> Reply:
        with self._lock:
            self.requests.append(request)
            return self._replies.popleft() if self._replies else Reply()

    def _answer(self, path: str, payload: Any, reply: Reply) -> tuple[int, dict[str, str], bytes]:
        headers = {"Content-Type": "application/json", **reply.headers}
        if reply.raw is not None:
            return reply.status, headers, reply.raw
        if reply.body is not None:
            return reply.status, headers, json.dumps(reply.body).encode()
        texts = payload.get("input") if isinstance(payload, dict) else None
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, list):
            return 400, headers, json.dumps({"error": "input must be a list"}).encode()
        dimensions = reply.dimensions or self.dimensions
        vectors = [fake_vector(text, dimensions) for text in texts]
        vectors = vectors[: len(vectors) - reply.drop_vectors]
        if path == "/api/embed":
            body: dict[str, Any] = {
                "model": payload.get("model"),
                "embeddings": vectors,
                "prompt_eval_count": sum(len(text.split()) for text in texts),
            }
        elif path == "/v1/embeddings":
            items = [
                {"object": "embedding", "index": index, "embedding": vector} for index, vector in enumerate(vectors)
            ]
            body = {
                "object": "list",
                "data": list(reversed(items)),
                "model": payload.get("model"),
                "usage": {"prompt_tokens": 0, "total_tokens": 0},
            }
        else:
            return 404, headers, json.dumps({"error": f"no route {path}"}).encode()
        return reply.status, headers, json.dumps(body).encode()


def _handler_for(server: FakeEmbeddingServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            try:
                payload = json.loads(raw) if raw else None
            except ValueError:
                payload = None
            reply = server._record_and_pick(
                RecordedRequest(
                    method="POST",
                    path=self.path,
                    headers={name.lower(): value for name, value in self.headers.items()},
                    json=payload,
                )
            )
            if reply.delay:
                server._stopping.wait(reply.delay)
            status, headers, body = server._answer(self.path, payload, reply)
            try:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                # The client gave up (a timeout test); nothing to answer.
                pass

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
