"""Every message survives encode → decode; anything outside the table or the schema is a WireError."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from teleops.wire import (
    MAX_MESSAGE_BYTES,
    MESSAGE_TYPES,
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
    WireError,
    decode,
    encode,
)

EXIT = Exit(
    command_id="42",
    exit_code=124,
    signal=None,
    timed_out=True,
    truncated=True,
    output_bytes=10_000_000,
    duration_s=2.5,
    output="head\n[… 9999 bytes truncated …]\ntail \\xff",
    finished_at=datetime(2026, 11, 25, 9, 0, tzinfo=UTC),
)

SAMPLES: list[Message] = [
    Hello(
        agent="web-1",
        hostname="web-1.example.org",
        version="0.1.0",
        labels={"env": "prod"},
        allowlist_digest="ab" * 32,
        results=[EXIT],
        running=["43", "44"],
    ),
    Welcome(agent_id=7, agent="web-1", server_time=datetime(2026, 11, 25, 9, 0, tzinfo=UTC), heartbeat_s=10),
    Exec(command_id="42", argv=["df", "-h", "/"], timeout_s=30, output_cap_bytes=65536, cwd="/tmp", env={"LANG": "C"}),
    Started(command_id="42", pid=1234),
    Output(command_id="42", seq=3, data="Filesystem  Size\n"),
    EXIT,
    Refused(command_id="42", reason='"reboot" is not in the agent allowlist'),
    Cancel(command_id="42"),
    Ack(command_id="42"),
    Ping(nonce=5),
    Pong(nonce=5),
    Error(code="bad_message", message="unknown message type"),
]


def test_the_samples_cover_every_registered_type() -> None:
    assert {m.type for m in SAMPLES} == set(MESSAGE_TYPES)


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: m.type)
def test_every_message_round_trips(message: Message) -> None:
    text = encode(message)
    assert json.loads(text)["v"] == 1
    assert decode(text) == message
    assert decode(text.encode()) == message


@pytest.mark.parametrize(
    "kind", ["__class__", "_private", "", "Hello", "HELLO", "model_validate", "__init__", "Message", "exec "]
)
def test_types_outside_the_table_are_rejected(kind: str) -> None:
    with pytest.raises(WireError, match="unknown message type"):
        decode(json.dumps({"v": 1, "type": kind, "command_id": "1"}))


@pytest.mark.parametrize("kind", [None, 1, ["exec"], {"x": 1}])
def test_a_type_that_is_not_a_string_is_rejected(kind: object) -> None:
    with pytest.raises(WireError, match="unknown message type"):
        decode(json.dumps({"v": 1, "type": kind}))


@pytest.mark.parametrize("text", ["", "{", "nul", "[1, 2]", '"hello"', "42", "\xff\xfe", b"\xff\xfe{}"])
def test_bad_json_or_non_objects_are_rejected(text: str | bytes) -> None:
    with pytest.raises(WireError):
        decode(text)


@pytest.mark.parametrize("version", [None, 0, 2, "1", True])
def test_other_protocol_versions_are_rejected(version: object) -> None:
    with pytest.raises(WireError, match="protocol version"):
        decode(json.dumps({"v": version, "type": "ping"}))


def test_oversize_frames_are_rejected_before_parsing() -> None:
    text = json.dumps({"v": 1, "type": "output", "command_id": "1", "seq": 0, "data": "x" * MAX_MESSAGE_BYTES})
    with pytest.raises(WireError, match="over the"):
        decode(text)


def test_encode_refuses_an_oversize_message() -> None:
    with pytest.raises(WireError, match="over the"):
        encode(Output(command_id="1", seq=0, data="x" * MAX_MESSAGE_BYTES))


@pytest.mark.parametrize(
    ("frame", "field"),
    [
        ({"type": "exec", "command_id": "1", "argv": [], "timeout_s": 5}, "argv"),
        ({"type": "exec", "command_id": "1", "argv": ["ls"], "timeout_s": 0}, "timeout_s"),
        ({"type": "exec", "command_id": "../../etc", "argv": ["ls"], "timeout_s": 5}, "command_id"),
        ({"type": "exec", "command_id": "1", "argv": ["ls"], "timeout_s": 5, "shell": True}, "shell"),
        ({"type": "output", "command_id": "1", "seq": -1, "data": ""}, "seq"),
        ({"type": "hello", "agent": "a b", "hostname": "h", "version": "1"}, "agent"),
        ({"type": "started"}, "command_id"),
    ],
)
def test_schema_violations_name_the_field(frame: dict[str, object], field: str) -> None:
    with pytest.raises(WireError, match=field):
        decode(json.dumps({"v": 1, **frame}))


def test_a_frame_may_not_claim_another_type_than_its_model() -> None:
    with pytest.raises(WireError, match="cancel"):
        decode(json.dumps({"v": 1, "type": "cancel", "command_id": "1", "argv": ["rm"]}))
