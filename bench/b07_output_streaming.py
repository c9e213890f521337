"""B7 1 MB of command output streamed to chat: time to the first edit of the output message, how edits are
paced (Telegram allows about one a second per chat), and what the rate-limited fake refused.

A real `teleops serve` with its embedded agent and the Telegram gateway pointed at the rate-limited fake Bot
API (bench/chat_receiver.py). A linked person replies to an incident's message with a command that prints what
`seq 1 150000` prints (about 1 MB) with a one-second pause halfway; the output streams into one message, edited
as it arrives, and the whole output ends as a file.
No peer: the target is the platform's own limit (≤ 1 edit a second to a chat, no 429).
"""

from __future__ import annotations

from typing import Any

from bench.chat_rig import calls, incident_chat, reply, until
from bench.context import Benchmark, Context
from bench.process import BenchError
from bench.report import Row, info

__all__ = ["BENCHMARK"]

# What `seq 1 150000` prints (1,038,894 bytes), with a pause halfway: a command that ends within half a second is
# shown once, finished (chat/commands.py), and B7 is about output streamed while the command still runs.
COMMAND = """perl -e '$| = 1; print "$_\\n" for 1 .. 75000; sleep 1; print "$_\\n" for 75001 .. 150000'"""


async def run(ctx: Context) -> list[Row]:
    async with incident_chat(ctx.sub("b7"), rate_limited=True) as (fake, _teleops):
        replied = await reply(fake, COMMAND)

        async def file_sent() -> list[list[Any]] | None:
            log = await calls(fake)
            return log if any(c[0] == "sendDocument" and c[3] == 200 for c in log) else None

        log = await until(file_sent, 120, "B7's output file")
    after = [c for c in log if c[2] >= replied]
    edits = sorted(c[2] for c in after if c[0] == "editMessageText" and c[3] == 200)
    refused = sum(1 for c in after if c[3] == 429)
    if not edits:
        raise BenchError("B7: the output message was never edited")
    first_message = min(c[2] for c in after if c[0] in ("sendMessage", "editMessageText") and c[3] == 200)
    file_at = min(c[2] for c in after if c[0] == "sendDocument" and c[3] == 200)
    busiest = max(sum(1 for t in edits if start <= t < start + 1.0) for start in edits)
    return [
        info("B7", "reply → first chat call for the command (message or edit)", "ms", (first_message - replied) * 1e3),
        info("B7", "reply → first edit of the output message", "ms", (edits[0] - replied) * 1e3),
        info("B7", "reply → whole output delivered as a file", "s", file_at - replied),
        info("B7", "edits of the output message", "edits", float(len(edits))),
        Row(
            "B7",
            "most edits in any 1 s (Telegram: about 1 a second per chat)",
            "edits",
            float(busiest),
            1.0,
            "platform limit",
            "lower",
            1.0,
        ),
        Row("B7", "429s from the rate-limited fake while streaming", "", float(refused), 0.0, "target 0", "lower", 1.0)
        if refused
        else info("B7", "429s from the rate-limited fake while streaming (target 0: met)", "", 0.0),
    ]


BENCHMARK = Benchmark("B7", "1 MB output streamed to chat", run)
