"""Controller↔agent messages, protocol version 1. Every message is one JSON object with `v` and `type`.

Output is carried as text: the agent decodes the command's bytes as UTF-8 with `backslashreplace`, so
valid text arrives as is and any other byte arrives as a visible `\\xNN` escape (a person reads it in chat;
nothing downstream needs the raw bytes). The decoder is incremental per command, so a character split
across two chunks is not mangled.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "PROTOCOL_VERSION",
    "Ack",
    "Cancel",
    "CommandId",
    "Error",
    "Exec",
    "Exit",
    "Hello",
    "Message",
    "Output",
    "Ping",
    "Pong",
    "Refused",
    "Started",
    "Welcome",
]

PROTOCOL_VERSION = 1
MAX_OUTPUT_CAP_BYTES = 1024 * 1024
MAX_TIMEOUT_S = 7 * 86400.0

# Command ids travel in logs, file names (the agent's spool) and URLs: keep them boring.
CommandId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")]
Name = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
ShortText = Annotated[str, Field(max_length=4096)]


class Message(BaseModel):
    """Base of every wire message: strict (unknown fields rejected), immutable, versioned."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)

    v: Literal[1] = 1
    type: str


class Exit(Message):
    """agent → controller: the command finished (or was killed); output is the capped whole output."""

    type: Literal["exit"] = "exit"
    command_id: CommandId
    exit_code: int
    signal: int | None = None
    timed_out: bool = False
    cancelled: bool = False
    truncated: bool = False
    output_bytes: int = Field(0, ge=0)
    duration_s: float = Field(0.0, ge=0)
    output: str = ""
    finished_at: datetime | None = None  # the agent's clock, for the record only (never compared)


class Hello(Message):
    """agent → controller, first message: who I am, and what happened while we were apart."""

    type: Literal["hello"] = "hello"
    agent: Name
    hostname: Annotated[str, Field(min_length=1, max_length=255)]
    version: Annotated[str, Field(max_length=32)]
    labels: dict[Annotated[str, Field(max_length=128)], Annotated[str, Field(max_length=255)]] = Field(
        default_factory=dict, max_length=64
    )
    allowlist_digest: Annotated[str, Field(max_length=128)] = ""
    results: list[Exit] = Field(default_factory=list, max_length=1000)  # finished while disconnected
    running: list[CommandId] = Field(default_factory=list, max_length=10_000)  # still running here


class Welcome(Message):
    """controller → agent: accepted; send pings every `heartbeat_s`."""

    type: Literal["welcome"] = "welcome"
    agent_id: int
    agent: Name
    server_time: datetime
    heartbeat_s: float = Field(gt=0, le=3600)


class Exec(Message):
    """controller → agent: run argv (no shell) once. The agent may still refuse it (allowlist, busy, seen)."""

    type: Literal["exec"] = "exec"
    command_id: CommandId
    argv: list[Annotated[str, Field(max_length=65536)]] = Field(min_length=1, max_length=4096)
    timeout_s: float = Field(gt=0, le=MAX_TIMEOUT_S)
    output_cap_bytes: int = Field(64 * 1024, ge=1024, le=MAX_OUTPUT_CAP_BYTES)
    cwd: Annotated[str, Field(min_length=1, max_length=4096)] = "/"
    env: dict[Annotated[str, Field(max_length=255)], Annotated[str, Field(max_length=4096)]] = Field(
        default_factory=dict, max_length=64
    )


class Started(Message):
    """agent → controller: the command was accepted and its process spawned."""

    type: Literal["started"] = "started"
    command_id: CommandId
    pid: int | None = None


class Output(Message):
    """agent → controller: the next chunk of interleaved stdout+stderr; `seq` counts from 0 per command."""

    type: Literal["output"] = "output"
    command_id: CommandId
    seq: int = Field(ge=0)
    data: str


class Refused(Message):
    """agent → controller: not run, and why (not in the agent's allowlist, busy, already seen)."""

    type: Literal["refused"] = "refused"
    command_id: CommandId
    reason: ShortText


class Cancel(Message):
    """controller → agent: kill the command's process group."""

    type: Literal["cancel"] = "cancel"
    command_id: CommandId


class Ack(Message):
    """controller → agent: the exit of `command_id` is stored; the agent may drop it from its spool."""

    type: Literal["ack"] = "ack"
    command_id: CommandId


class Ping(Message):
    type: Literal["ping"] = "ping"
    nonce: int = 0


class Pong(Message):
    type: Literal["pong"] = "pong"
    nonce: int = 0


class Error(Message):
    """Either side: what went wrong with the last message or the session, in words for a log."""

    type: Literal["error"] = "error"
    code: Annotated[str, Field(max_length=64)]
    message: ShortText
