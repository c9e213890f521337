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

__all__ = ["app", "serve_like_teleops"]


async def receive(request: Request) -> JSONResponse:
    payload = json.loads(await request.body())
    return JSONResponse({"received": len(payload.get("alerts", []))})


async def ready(_request: Request) -> JSONResponse:
    return JSONResponse({"status": "ready"})


app = Starlette(routes=[Route("/api/v1/alerts/{source}", receive, methods=["POST"]), Route("/readyz", ready)])


def serve_like_teleops(asgi: Starlette, port: int) -> None:
    """Run `asgi` under uvicorn with the keyword arguments `teleops serve` uses (src/teleops/cli/serve.py), so a
    peer differs from TeleOps in its own work, not in the server setup."""
    uvicorn.run(
        asgi,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        proxy_headers=False,
        ws_max_size=1024 * 1024,
    )


def main() -> None:
    serve_like_teleops(app, int(sys.argv[1]))


if __name__ == "__main__":
    main()
