"""The B6 floor's agent: `python -m bench.floor_agent PORT [--journal FILE]` answers every message after spawning
`true` for it.

The least an agent can do per command — receive a frame, start a process, wait for it, answer — on the same
core as TeleOps' agent (the server core), so the floor pays the same CPU contention as the real thing.
With `--journal` (the durable minimum, bench/minimum_commands.py) it first appends the message to FILE and
fdatasyncs it, as an agent that promises at-most-once must before it starts anything, and answers
`{"id": …, "exit": …}`.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable

from websockets.asyncio.server import ServerConnection, serve


async def _exec_and_answer(connection: ServerConnection) -> None:
    async for message in connection:
        process = await asyncio.create_subprocess_exec("true")
        await process.wait()
        await connection.send(message)


def _journaled(journal: int) -> Callable[[ServerConnection], Awaitable[None]]:
    async def exec_and_answer(connection: ServerConnection) -> None:
        async for message in connection:
            command = json.loads(message)
            os.write(journal, f"{command['id']}\n".encode())
            os.fdatasync(journal)
            process = await asyncio.create_subprocess_exec(*command["argv"])
            code = await process.wait()
            await connection.send(json.dumps({"id": command["id"], "exit": code}))

    return exec_and_answer


async def main(port: int, journal_path: str | None) -> None:
    handler: Callable[[ServerConnection], Awaitable[None]] = _exec_and_answer
    if journal_path is not None:
        handler = _journaled(os.open(journal_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600))
    async with serve(handler, "127.0.0.1", port):
        await asyncio.Future()


if __name__ == "__main__":
    arguments = sys.argv[1:]
    journal = arguments[arguments.index("--journal") + 1] if "--journal" in arguments else None
    asyncio.run(main(int(arguments[0]), journal))
