"""One command on many hosts at once: each host gets its own command, decided and audited like a single one,
with every allowed dispatch recorded in one commit and the execs sent together.

Per host, the same steps as a single command (commands/submit.py `resolve`, `online`, `decide`, `denied`): the
host must resolve to a connected agent and the policy must allow the command there. A refusal is recorded
`denied` and audited. A rule that needs a one-time code or a second person is not run from a fan-out (nobody can
approve 1,000 commands one by one): that host's item says to run it on its own, and the refusal is audited
(`command.stepup_required` / `command.approval_required`, with nothing recorded, as for a single command
awaiting a code). Errors for one host never stop the others.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import structlog

from teleops.commands.command_line import split_command
from teleops.commands.dispatch import (
    NOT_DURABLE,
    CommandRequest,
    CommandSender,
    fail_unsent,
    record_audit,
    send_dispatched,
    write_checkpoint,
)
from teleops.commands.outcome import NotRun
from teleops.commands.submit import decide, denied, online, resolve
from teleops.domain.command import CommandRecord
from teleops.store.agents import AgentRecord
from teleops.store.audit import AuditUnavailable
from teleops.store.audit_checkpoints import CheckpointLog
from teleops.store.audited_dispatch import DispatchFacts, create_many_dispatched_audited
from teleops.store.database import Database, NotDurable

__all__ = ["FanoutItem", "submit_fanout"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class FanoutItem:
    """What happened on one host: its command (running, failed or denied), or why nothing was recorded."""

    host: str
    command: CommandRecord | None = None
    error: str | None = None


async def submit_fanout(
    db: Database,
    sender: CommandSender,
    agents: Sequence[AgentRecord],
    request: CommandRequest,
    hosts: Sequence[str],
    *,
    now: datetime,
    checkpoints: CheckpointLog | None = None,
) -> list[FanoutItem]:
    """Run `request.command` on every host of `hosts` (`request.host` is ignored); one item per host, in order.

    Raises CommandLineError (bad text: nothing recorded anywhere) and StorageUnavailable (nothing sent).
    """
    argv = split_command(request.command)
    items: dict[int, FanoutItem] = {}
    allowed: list[tuple[int, DispatchFacts]] = []
    for index, host in enumerate(hosts):
        agent = resolve(host, agents)
        if isinstance(agent, NotRun):
            items[index] = FanoutItem(host, error=agent.reason)
            continue
        if online(sender, agent, host) is not None:
            items[index] = FanoutItem(host, error=f"agent {agent.name} is offline; nothing was run there")
            continue
        decided = decide(db, request, host, agent, argv, extra_facts={"fanout": len(hosts)}, keep_text=False)
        decision, one = decided.decision, decided.facts
        if denial := await denied(db, decided, now=now):
            items[index] = FanoutItem(host, command=denial.record)
        elif decision.require_2fa or decision.require_approval:
            needs = "a one-time code" if decision.require_2fa else "a second person's approval"
            action = "command.stepup_required" if decision.require_2fa else "command.approval_required"
            await record_audit(db, now=now, actor=request.requester, action=action, subject="", data=one.audit_data)
            items[index] = FanoutItem(
                host, error=f"{decision.reason}: it needs {needs}, so it is not run from a fan-out; run it on its own"
            )
        else:
            allowed.append((index, one))
    try:
        created = await create_many_dispatched_audited(db, [one for _, one in allowed], now=now)
    except NotDurable as exc:  # recorded `running` but maybe not on disk: none of them may run
        log.error("command.dispatch_not_durable", fanout=len(hosts), error=str(exc))
        for (index, _one), (record, _event) in zip(allowed, exc.applied, strict=True):
            items[index] = FanoutItem(record.host, command=await fail_unsent(db, record, NOT_DURABLE, now=now))
        return [items[i] for i in range(len(hosts))]
    except AuditUnavailable as exc:  # no audit, no execution (T30)
        log.error("command.audit_failed", fanout=len(hosts), error=str(exc))
        for index, refused in allowed:
            items[index] = FanoutItem(refused.host, error="not executed: audit unavailable; try again later")
        return [items[i] for i in range(len(hosts))]
    sent = await asyncio.gather(
        *(
            send_dispatched(db, sender, record, output_cap_bytes=request.output_cap_bytes, now=now)
            for record, _event in created
        )
    )
    for (index, _facts), record in zip(allowed, sent, strict=True):
        items[index] = FanoutItem(record.host, command=record)
    if created and checkpoints is not None:
        await write_checkpoint(checkpoints, created[-1][1])  # the last event covers the whole chain before it
    log.info("command.fanout", hosts=len(hosts), dispatched=len(created), requester=request.requester)
    return [items[i] for i in range(len(hosts))]
