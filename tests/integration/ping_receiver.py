"""A dead-man's switch for tests: a real HTTP server on a free loopback port, in a thread of its own, that records
every ping (path, method, body, arrival on the monotonic clock) and answers 200, like a healthchecks-style endpoint.
It runs in its own thread so a test may block (sleep, wait on a subprocess) while pings keep arriving."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["Ping", "PingReceiver"]


@dataclass(frozen=True)
class Ping:
    path: str
    method: str
    body: str
    at: float  # time.monotonic() when it arrived


class PingReceiver:
    """`with PingReceiver() as switch:` … `switch.url("/ping/<uuid>")`, `switch.pings()`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pings: list[Ping] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _record(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode(errors="replace") if length else ""
                with receiver._lock:
                    receiver._pings.append(Ping(self.path, self.command, body, time.monotonic()))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"OK")

            do_GET = do_POST = do_HEAD = _record

            def log_message(self, format: str, *args: object) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="ping-receiver", daemon=True)

    def __enter__(self) -> PingReceiver:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def pings(self, path: str | None = None) -> list[Ping]:
        """Pings so far, oldest first (only those to `path` when given)."""
        with self._lock:
            return [p for p in self._pings if path is None or p.path == path]
