"""Text ↔ message. Only the types in MESSAGE_TYPES exist; anything else is a WireError, never a lookup by name."""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from teleops.wire.messages import (
    PROTOCOL_VERSION,
    Ack,
    Cancel,
    Error,
    Exec,
    Exit,
    Hello,
    Message,
    Output,
    Ping,
    Pong,
    Refused,
    Started,
    Welcome,
)

__all__ = ["MAX_MESSAGE_BYTES", "MESSAGE_TYPES", "WireError", "decode", "encode"]

# Above the largest legitimate message (a hello with spooled results is trimmed to fit under this).
MAX_MESSAGE_BYTES = 4 * 1024 * 1024

# The explicit table (docs/threat-model.md T13): a `type` not spelled here is rejected.
MESSAGE_TYPES: dict[str, type[Message]] = {
    "hello": Hello,
    "welcome": Welcome,
    "exec": Exec,
    "started": Started,
    "output": Output,
    "exit": Exit,
    "refused": Refused,
    "cancel": Cancel,
    "ack": Ack,
    "ping": Ping,
    "pong": Pong,
    "error": Error,
}


class WireError(ValueError):
    """A frame that is not a valid protocol-1 message. The text says which part is wrong, never echoes the frame."""


def decode(text: str | bytes) -> Message:
    """Parse one frame. Raises WireError for oversize, bad JSON, a non-object, a wrong version, an unknown
    type, or a schema violation (the message names the field)."""
    if len(text) > MAX_MESSAGE_BYTES:
        raise WireError(f"message of {len(text)} bytes is over the {MAX_MESSAGE_BYTES}-byte limit")
    try:
        data: Any = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise WireError(f"not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise WireError("a message must be a JSON object")
    version = data.get("v")
    if version != PROTOCOL_VERSION or isinstance(version, bool):
        raise WireError(f"unsupported protocol version {version!r}; this side speaks v{PROTOCOL_VERSION}")
    kind = data.get("type")
    model = MESSAGE_TYPES.get(kind) if isinstance(kind, str) else None
    if model is None:
        shown = kind[:40] if isinstance(kind, str) else type(kind).__name__
        raise WireError(f"unknown message type {shown!r}; known: {', '.join(sorted(MESSAGE_TYPES))}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(message)"
        raise WireError(f"{kind}: {where}: {first['msg']}") from None


def encode(message: Message) -> str:
    """One frame of compact JSON. Raises WireError if it would be over MAX_MESSAGE_BYTES."""
    if MESSAGE_TYPES.get(message.type) is not type(message):
        raise WireError(f"{type(message).__name__} is not a registered message type")
    text = message.model_dump_json()
    if len(text) > MAX_MESSAGE_BYTES:
        raise WireError(f"{message.type} message of {len(text)} bytes is over the {MAX_MESSAGE_BYTES}-byte limit")
    return text
