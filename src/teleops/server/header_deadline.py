"""Slow request headers: a connection whose request line and headers are not all in within `server.header_timeout`
is answered 408 and closed.

The front door (server/front_door.py) bounds a request once its headers are in; before that the request is
uvicorn's, and uvicorn has no header timeout: a client that connects and sends nothing, or one header byte a
minute, holds its connection for ever (only the keep-alive timer, armed *after* a response, closes idle
connections). This is uvicorn's httptools protocol (the one `uvicorn[standard]` picks) with a timer that starts
when the connection opens, or when the next request on a kept-alive connection starts, and stops when that
request's headers are complete. A WebSocket handshake is a request like any other until its headers are in.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["header_deadline_protocol"]

_TOO_SLOW_TEXT = b"the request headers did not arrive in time (server.header_timeout); send them at once"
_TOO_SLOW = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
    b"content-length: %d\r\n\r\n%s" % (len(_TOO_SLOW_TEXT), _TOO_SLOW_TEXT)
)


def header_deadline_protocol(timeout_s: float) -> type[asyncio.Protocol]:
    """uvicorn's `http` protocol class, closing connections whose headers take longer than `timeout_s`."""

    class HeaderDeadlineProtocol(HttpToolsProtocol):
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self._header_timer is None:  # the next request on a kept-alive connection
                self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def _arm(self) -> None:
            self._header_timer = self.loop.call_later(timeout_s, self._headers_too_slow)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_too_slow(self) -> None:
            self._header_timer = None
            if self.transport.is_closing():
                return
            if self.cycle is None or self.cycle.response_complete:  # nothing of ours is being answered
                self.transport.write(_TOO_SLOW)
            self.transport.close()

    return HeaderDeadlineProtocol
