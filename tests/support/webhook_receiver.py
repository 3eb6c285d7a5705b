"""A webhook receiver on 127.0.0.x for tests: records every request and
answers with the next scripted status (200 once the script runs out), or
with a redirect."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


class WebhookReceiver:
    def __init__(self, *, host: str = "127.0.0.1") -> None:
        self.requests: list[Received] = []
        self._script: deque = deque()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                with receiver._lock:
                    receiver.requests.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                    reply = receiver._script.popleft() if receiver._script else 200
                if isinstance(reply, str):
                    self.send_response(307)
                    self.send_header("Location", reply)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                payload = b"ok" if reply < 400 else b"receiver is down"
                self.send_response(reply)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer((host, 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://{host}:{self._server.server_address[1]}/hooks/mirage"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def script(self, *replies: int | str) -> None:
        """Status codes to answer with, in order; a string is a redirect to it."""
        with self._lock:
            self._script.extend(replies)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
