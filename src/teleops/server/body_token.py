"""A token sent inside the body (PagerDuty's `routing_key`), found in the body's first 4 KiB and nowhere else.

A PagerDuty-style sender may authenticate with `"routing_key": "TOKEN"` in its JSON instead of an Authorization
header. Until issue #18's last gaps were closed the route read up to 64 KiB, unauthenticated, to find it. Now the
front door (server/front_door.py) pulls at most `PREFIX_BYTES` of the body, looks for the top-level
`routing_key` in that prefix with `leading_field` (a small scanner that tracks strings and nesting: a
`routing_key` inside `payload.custom_details` is not the sender's), and only when it names a valid ingest token
is the rest of the body read, up to `server.max_body_bytes`. The route then requires the parsed body's
`routing_key` to be the one that was authenticated (`BODY_TOKEN`), so a body cannot name one key early and
another later; duplicate keys are refused by the strict JSON parser anyway (server/json_body.py).

Who puts it first: Alertmanager's PagerDuty notifier marshals a struct whose first field is `routing_key`, and
most hand-written clients build `{"routing_key": …, "event_action": …, "payload": …}`. Some put it after the
payload (serde_json's `json!` sorts keys, so `routing_key` follows `payload`); their events are still accepted
while the whole event is under 4 KiB, which a normal one is. A larger event with the key after 4 KiB is refused
with a 401 that says to put `routing_key` first or to send `Authorization: Bearer TOKEN` (docs/ingest-limits.md).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.types import Message, Receive

__all__ = ["BODY_TOKEN", "PREFIX_BYTES", "leading_field", "read_prefix", "replaying"]

PREFIX_BYTES = 4 * 1024

# The scope key under which the front door leaves the `routing_key` it authenticated (server/auth.py keeps the
# other verified credentials); routes/alerts.py compares the parsed body's key with it.
BODY_TOKEN = "teleops.body_token"  # noqa: S105 (a scope key, not a secret)

_WHITESPACE = b" \t\r\n"


def leading_field(prefix: bytes, name: str) -> str | None:
    """The string value of the top-level key `name` of the JSON object that `prefix` starts, when the key and its
    whole value are inside `prefix`; None otherwise (not an object, the key absent or cut, a value that is not
    a plain string, or one with escapes: a token is URL-safe text and never needs them).

    Only the first occurrence at the top level counts: the route refuses a body whose parsed value differs."""
    key = b'"' + name.encode() + b'"'
    at = _skip_space(prefix, 0)
    if at >= len(prefix) or prefix[at] != ord("{"):
        return None
    depth = 0
    in_string = False
    escaped = False
    index = at
    while index < len(prefix):
        byte = prefix[index]
        if in_string:
            if escaped:
                escaped = False
            elif byte == ord("\\"):
                escaped = True
            elif byte == ord('"'):
                in_string = False
            index += 1
            continue
        if byte == ord('"'):
            if depth == 1 and prefix.startswith(key, index):
                colon = _skip_space(prefix, index + len(key))
                if colon < len(prefix) and prefix[colon] == ord(":"):
                    return _plain_string(prefix, _skip_space(prefix, colon + 1))
            in_string = True
        elif byte in b"{[":
            depth += 1
        elif byte in b"}]":
            depth -= 1
            if depth == 0:
                return None  # the object ended without the key
        index += 1
    return None


def _skip_space(data: bytes, index: int) -> int:
    while index < len(data) and data[index] in _WHITESPACE:
        index += 1
    return index


def _plain_string(data: bytes, index: int) -> str | None:
    if index >= len(data) or data[index] != ord('"'):
        return None
    end = data.find(b'"', index + 1)
    if end < 0:
        return None  # cut by the prefix
    value = data[index + 1 : end]
    if b"\\" in value or any(byte < 0x20 for byte in value):
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return None


async def read_prefix(receive: Receive, limit: int = PREFIX_BYTES) -> tuple[list[Message], bytes, bool]:
    """Pull body messages until `limit` bytes (or the whole body, or a disconnect) arrived; never pulls more.

    Returns the messages as received (to replay to the app), the first `limit` bytes, and whether the client
    went away."""
    messages: list[Message] = []
    data = bytearray()
    while len(data) < limit:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return messages, bytes(data[:limit]), True
        data += message.get("body", b"")
        if not message.get("more_body", False):
            break
    return messages, bytes(data[:limit]), False


def replaying(messages: list[Message], receive: Receive) -> Callable[[], Awaitable[Message]]:
    """A `receive` that hands out `messages` first, then goes on with `receive`."""
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay
