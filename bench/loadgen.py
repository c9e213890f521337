"""A small HTTP/1.1 keep-alive load generator on raw asyncio protocols.

Closed loop: `concurrency` connections, each sends its next request as soon as the previous answer is
in. The client does as little as it can per request (one pre-built byte string out, a Content-Length
or chunked body in), so on a 2-core machine it is not the bottleneck; every peer is driven by this
same client, so whatever it costs is paid equally by both sides of a ratio.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["HttpError", "LoadResult", "build_request", "percentile", "request_once", "run_load"]


class HttpError(Exception):
    """The server closed the connection or answered something that is not HTTP/1.1."""


@dataclass(slots=True)
class LoadResult:
    requests: int
    seconds: float
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    def p(self, q: float) -> float:
        return percentile(self.latencies, q)

    @property
    def errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if not 200 <= status < 300)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by nearest rank; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def build_request(
    method: str, host: str, port: int, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> bytes:
    """One complete HTTP/1.1 request with Content-Length, ready to write."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {len(body)}"]
    if body:
        lines.append("Content-Type: application/json")
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class _Connection(asyncio.Protocol):
    """One keep-alive connection; `send` resolves with (status, body) of the next response."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self._transport: asyncio.Transport | None = None
        self._closed: Exception | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = HttpError(f"connection closed by the server ({exc})")
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(self._closed)

    def send(self, request: bytes) -> asyncio.Future[tuple[int, bytes]]:
        waiter: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()
        if self._closed is not None:
            waiter.set_exception(self._closed)
            return waiter
        self._waiter = waiter
        assert self._transport is not None
        self._transport.write(request)
        return waiter

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        parsed = _parse_response(self._buffer)
        if parsed is None:
            return
        status, body, used = parsed
        del self._buffer[:used]
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result((status, body))

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


def _parse_response(buffer: bytearray) -> tuple[int, bytes, int] | None:
    """(status, body, bytes consumed) when a whole response is in `buffer`, else None."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buffer[:end]).decode("latin-1")
    status_line, *header_lines = head.split("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
        raise HttpError(f"not an HTTP/1.1 response: {status_line[:80]!r}")
    status = int(parts[1])
    length: int | None = None
    chunked = False
    for line in header_lines:
        name, _, value = line.partition(":")
        lowered = name.strip().lower()
        if lowered == "content-length":
            length = int(value.strip())
        elif lowered == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
    start = end + 4
    if chunked:
        return _parse_chunked(buffer, start, status)
    length = length or 0
    if len(buffer) < start + length:
        return None
    return status, bytes(buffer[start : start + length]), start + length


def _parse_chunked(buffer: bytearray, start: int, status: int) -> tuple[int, bytes, int] | None:
    body = bytearray()
    position = start
    while True:
        line_end = buffer.find(b"\r\n", position)
        if line_end < 0:
            return None
        size = int(bytes(buffer[position:line_end]).split(b";")[0], 16)
        chunk_start = line_end + 2
        if len(buffer) < chunk_start + size + 2:
            return None
        if size == 0:
            trailer_end = buffer.find(b"\r\n", chunk_start)
            return (status, bytes(body), trailer_end + 2) if trailer_end >= 0 else None
        body += buffer[chunk_start : chunk_start + size]
        position = chunk_start + size + 2


async def _connect(host: str, port: int) -> _Connection:
    loop = asyncio.get_running_loop()
    _transport, protocol = await loop.create_connection(_Connection, host, port)
    return protocol


class KeepAlive:
    """One keep-alive connection for sequential requests: `await conn.request(raw)` -> (status, body)."""

    def __init__(self, connection: _Connection) -> None:
        self._connection = connection

    @classmethod
    async def open(cls, host: str, port: int) -> KeepAlive:
        return cls(await _connect(host, port))

    async def request(self, raw: bytes, *, timeout: float = 30.0) -> tuple[int, bytes]:
        return await asyncio.wait_for(self._connection.send(raw), timeout)

    def close(self) -> None:
        self._connection.close()


async def request_once(host: str, port: int, request: bytes, *, timeout: float = 10.0) -> tuple[int, bytes]:
    """Send one request on a fresh connection; (status, body). Raises HttpError or OSError."""
    connection = await _connect(host, port)
    try:
        return await asyncio.wait_for(connection.send(request), timeout)
    finally:
        connection.close()


async def run_load(
    host: str,
    port: int,
    make_request: Callable[[int], bytes],
    *,
    concurrency: int,
    requests: int | None = None,
    duration: float | None = None,
    warmup: int = 0,
    timeout: float = 30.0,
) -> LoadResult:
    """Drive the server with `concurrency` keep-alive connections.

    `make_request(i)` builds the i-th request (i counts from 0 across all connections, warm-up
    included), so two servers given the same factory receive the same sequence. Stops after
    `requests` measured requests or `duration` seconds, whichever is given. Raises HttpError when a
    connection breaks: a benchmark on a failing server has no number.
    """
    if requests is None and duration is None:
        raise ValueError("give requests= or duration=")
    connections = [await _connect(host, port) for _ in range(concurrency)]
    counter = itertools.count()
    try:
        for _ in range(warmup):
            await asyncio.wait_for(connections[0].send(make_request(next(counter))), timeout)
        result = LoadResult(requests=0, seconds=0.0)
        latencies = result.latencies
        statuses = result.statuses
        started = time.perf_counter()
        deadline = started + duration if duration is not None else float("inf")
        budget = itertools.count() if requests is None else iter(range(requests))

        async def worker(connection: _Connection) -> None:
            clock = time.perf_counter
            for _ in budget:
                sent = clock()
                if sent >= deadline:
                    return
                status, _body = await asyncio.wait_for(connection.send(make_request(next(counter))), timeout)
                latencies.append(clock() - sent)
                statuses[status] = statuses.get(status, 0) + 1

        await asyncio.gather(*(worker(c) for c in connections))
        result.seconds = time.perf_counter() - started
        result.requests = len(latencies)
        return result
    finally:
        for connection in connections:
            connection.close()
