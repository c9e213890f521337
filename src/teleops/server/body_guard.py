"""The body of one request under the front door (server/front_door.py): cut at its cap (413) and at its deadline
(408), and the refusals the front door sends instead of the app's answer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog
from starlette.datastructures import Headers
from starlette.responses import JSONResponse, Response
from starlette.types import Message, Receive, Scope, Send

__all__ = ["BodyGuard", "Once", "Refusal", "json_refusal", "no_receive"]

log = structlog.get_logger(__name__)


class Refusal(Exception):
    """An answer the front door sends instead of the app's."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


def json_refusal(status: int, detail: str, headers: dict[str, str] | None = None) -> Refusal:
    return Refusal(JSONResponse({"detail": detail}, status_code=status, headers=headers))


class BodyGuard:
    """Wraps receive/send for one request: the body is cut at `cap` (413) and at `timeout` seconds (408).

    Once the guard has answered, the app's `receive` gets `http.disconnect` and what the app sends is dropped.
    """

    def __init__(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        *,
        cap: int,
        timeout: float,
        too_large: Callable[[], Refusal],
        on_complete: Callable[[], None] = lambda: None,
    ) -> None:
        self._scope = scope
        self._receive = receive
        self._send = send
        self._cap = cap
        self._deadline = asyncio.get_running_loop().time() + timeout
        self._timeout = timeout
        self._too_large = too_large
        self._on_complete = on_complete
        self._received = 0
        self._complete = False
        self._chunked = "transfer-encoding" in Headers(scope=scope)
        self._started = False
        self.refused = False

    async def receive(self) -> Message:
        if self.refused:
            return {"type": "http.disconnect"}
        if self._complete:
            return await self._receive()  # after the body: the app only waits for a disconnect
        try:
            async with asyncio.timeout(max(self._deadline - asyncio.get_running_loop().time(), 0)):
                message = await self._receive()
        except TimeoutError:
            detail = (
                f"the request body did not arrive within {self._timeout:g}s (server.body_timeout); "
                "send it at once, or raise the limit"
            )
            await self._refuse(json_refusal(408, detail))
            return {"type": "http.disconnect"}
        if message["type"] == "http.request":
            self._received += len(message.get("body", b""))
            if self._received > self._cap:
                await self._refuse(self._too_large())
                return {"type": "http.disconnect"}
            if not message.get("more_body", False):
                self._complete = True
                self._on_complete()
        return message

    async def send(self, message: Message) -> None:
        if self.refused:
            return
        if message["type"] == "http.response.start":
            self._started = True
            if not self._complete and self._chunked:
                message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
        await self._send(message)

    async def _refuse(self, refusal: Refusal) -> None:
        self.refused = True
        log.info("front_door.body_refused", path=self._scope["path"], status=refusal.response.status_code)
        if self._started:
            return  # the app already answered; the connection closes after its response
        refusal.response.headers["Connection"] = "close"
        await refusal.response(self._scope, no_receive, self._send)


class Once:
    """Calls `action` (if any) the first time it is called, never again."""

    def __init__(self, action: Callable[[], None] | None) -> None:
        self._action = action

    def __call__(self) -> None:
        action, self._action = self._action, None
        if action is not None:
            action()


async def no_receive() -> Message:
    return {"type": "http.disconnect"}
