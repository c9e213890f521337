"""Controller↔agent wire protocol (versioned JSON over WebSocket). Standard library and pydantic only."""

from teleops.wire.codec import MAX_MESSAGE_BYTES, MESSAGE_TYPES, WireError, decode, encode
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

__all__ = [
    "MAX_MESSAGE_BYTES",
    "MESSAGE_TYPES",
    "PROTOCOL_VERSION",
    "Ack",
    "Cancel",
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
    "WireError",
    "decode",
    "encode",
]
