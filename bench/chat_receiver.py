"""`python -m bench.chat_receiver {telegram|webhook} PORT [--rate-limited]`: the far end of B3/B4, as its own process.

- telegram: the fake Telegram Bot API of the test suite (tests/fakes/telegram.py) on PORT; with
  `--rate-limited` it answers 429 (with `retry_after`) like Telegram does when a chat gets more than one
  message a second or a group more than 20 a minute.
- webhook: a tiny receiver for Alertmanager's webhook (the peer's "chat").

Both serve `GET /stats`: every call with its `time.monotonic()` arrival (CLOCK_MONOTONIC is one clock for
all processes of the machine, so the benchmark compares it with its own send times).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import deque
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from tests.fakes.telegram import FakeTelegram, _error

TOKEN = "123456:BENCH-token"
_SENDING = {"sendMessage", "editMessageText", "sendDocument"}
GROUP_PER_MINUTE = 20


class RateLimitedTelegram(FakeTelegram):
    """The fake Bot API with Telegram's flood limits on sending methods (per chat: 1/s; groups: 20/min)."""

    def __init__(self, port: int, *, rate_limited: bool) -> None:
        super().__init__(TOKEN)
        self.port = port
        self.rate_limited = rate_limited
        self._sent: dict[int, deque[float]] = {}
        self._app.router.routes.append(Route("/stats", self._stats, methods=["GET"]))
        self._app.router.routes.append(Route("/reply", self._reply, methods=["POST"]))

    async def _reply(self, request: Request) -> JSONResponse:
        """B7's person: `{"chat_id", "user_id", "text"}` becomes an update replying to the bot's first message there."""
        body = json.loads(await request.body())
        chat_id, user_id = int(body["chat_id"]), int(body["user_id"])
        first = min((m for (c, m) in self.messages if c == chat_id), default=None)
        update = self.message_update(chat_id, user_id, str(body["text"]), username="ops", reply_to=first)
        return JSONResponse({"update_id": self.push_update(update), "reply_to": first})

    async def _endpoint(self, request: Request) -> JSONResponse:
        method = request.path_params["method"]
        if self.rate_limited and method in _SENDING:
            chat_id = await _chat_of(request)
            retry_after = self._flood_wait(chat_id) if chat_id is not None else 0
            if retry_after:
                self.calls.append(_call(method, chat_id, 429))
                return _error(429, f"Too Many Requests: retry after {retry_after}", retry_after)
        return await super()._endpoint(request)

    def _flood_wait(self, chat_id: int) -> int:
        now = time.monotonic()
        sent = self._sent.setdefault(chat_id, deque())
        while sent and now - sent[0] > 60:
            sent.popleft()
        if sent and now - sent[-1] < 1.0:
            return 1
        if chat_id < 0 and len(sent) >= GROUP_PER_MINUTE:
            return max(1, int(60 - (now - sent[0])) + 1)
        sent.append(now)
        return 0

    async def _stats(self, _request: Request) -> JSONResponse:
        return JSONResponse(
            {
                "calls": [
                    [c.method, c.params.get("chat_id"), c.at, c.status, c.params.get("text")]
                    for c in self.calls
                    if c.method != "getUpdates"
                ]
            }
        )


def _call(method: str, chat_id: int | None, status: int) -> Any:
    from tests.fakes.telegram import Call

    return Call(method, {"chat_id": chat_id}, time.monotonic(), status)


async def _chat_of(request: Request) -> int | None:
    form: dict[str, Any]
    body = await request.body()  # cached on the request: the fake's own handler reads it again
    if request.headers.get("content-type", "").startswith("application/json"):
        form = json.loads(body or b"{}")
    else:
        form = dict(await request.form())
    try:
        return int(form["chat_id"])
    except (KeyError, TypeError, ValueError):
        return None


def _webhook_app() -> Starlette:
    posts: list[list[float]] = []

    async def receive(request: Request) -> Response:
        body = json.loads(await request.body())
        posts.append([time.monotonic(), len(body.get("alerts", []))])
        return Response(status_code=200)

    async def stats(_request: Request) -> JSONResponse:
        return JSONResponse({"posts": posts})

    async def ready(_request: Request) -> Response:
        return Response(status_code=200)

    return Starlette(
        routes=[
            Route("/hook", receive, methods=["POST"]),
            Route("/stats", stats, methods=["GET"]),
            Route("/readyz", ready, methods=["GET"]),
        ]
    )


async def _serve_telegram(port: int, rate_limited: bool) -> None:
    fake = RateLimitedTelegram(port, rate_limited=rate_limited)
    fake._app.router.routes.append(Route("/readyz", lambda _r: Response(status_code=200), methods=["GET"]))
    await fake.start()
    assert fake._task is not None
    await fake._task


def main(argv: list[str]) -> int:
    kind, port = argv[0], int(argv[1])
    if kind == "telegram":
        asyncio.run(_serve_telegram(port, "--rate-limited" in argv))
    else:
        uvicorn.run(_webhook_app(), host="127.0.0.1", port=port, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
