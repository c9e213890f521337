"""The B6 floor's agent: `python -m bench.floor_agent PORT` answers every message after spawning `true` for it.

The least an agent can do per command — receive a frame, start a process, wait for it, answer — on the same
core as TeleOps' agent (the server core), so the floor pays the same CPU contention as the real thing.
"""

from __future__ import annotations

import asyncio
import sys

from websockets.asyncio.server import ServerConnection, serve


async def _exec_and_answer(connection: ServerConnection) -> None:
    async for message in connection:
        process = await asyncio.create_subprocess_exec("true")
        await process.wait()
        await connection.send(message)


async def main(port: int) -> None:
    async with serve(_exec_and_answer, "127.0.0.1", port):
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
