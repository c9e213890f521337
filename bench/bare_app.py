"""The B1 peer: a bare Starlette app that answers the same POST (parse JSON, answer 200).

Run as `python -m bench.bare_app PORT`; it starts uvicorn with the settings `teleops serve` uses, so
the difference measured is TeleOps' own work, not the server setup.
"""

from __future__ import annotations

import json
import sys

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

__all__ = ["app"]


async def receive(request: Request) -> JSONResponse:
    payload = json.loads(await request.body())
    return JSONResponse({"received": len(payload.get("alerts", []))})


async def ready(_request: Request) -> JSONResponse:
    return JSONResponse({"status": "ready"})


app = Starlette(routes=[Route("/api/v1/alerts/{source}", receive, methods=["POST"]), Route("/readyz", ready)])


def main() -> None:
    # The same keyword arguments as `teleops serve` (src/teleops/cli.py).
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        log_level="warning",
        access_log=False,
        proxy_headers=False,
        ws_max_size=1024 * 1024,
    )


if __name__ == "__main__":
    main()
