"""The inbound pipeline as data: the checks run in today's order, the first that ends a turn ends it, and every
verb /help names has a handler (the behaviour of each check is driven end to end in tests/scenarios)."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime

from teleops.chat.base import EventKind, InboundEvent
from teleops.chat.inbound import CHECKS, Checkpoint, Turn, open_verbs, pass_checks, read_verb
from teleops.chat.verbs import HELP, VERBS


def _event(text: str, *, kind: EventKind = EventKind.MESSAGE) -> InboundEvent:
    return InboundEvent(
        platform="telegram",
        kind=kind,
        chat_id="-100",
        user_id="42",
        text=text,
        sent_at=datetime(2025, 1, 1, tzinfo=UTC),
        update_id="u-1",
    )


def test_checks_run_in_the_order_the_conversation_always_had() -> None:
    # Silent drops first (so nobody can make TeleOps talk), /whoami and /link before identity, age after identity
    # (an unlinked sender of an old message is told they are unlinked, not that it is old).
    assert [check.__name__ for check in CHECKS] == [
        "replay_guard",
        "allowed_chat",
        "not_forwarded_or_edited",
        "from_a_person",
        "read_verb",
        "open_verbs",
        "identify_person",
        "not_stale",
        "not_from_the_future",
    ]


def test_the_first_check_that_ends_a_turn_stops_the_rest() -> None:
    ran: list[str] = []

    async def tag(_at: Checkpoint, turn: Turn) -> Turn | None:
        ran.append("tag")
        return Turn(turn.event, verb="tagged")

    async def stop(_at: Checkpoint, turn: Turn) -> Turn | None:
        ran.append(f"stop saw {turn.verb}")
        return None

    async def never(_at: Checkpoint, turn: Turn) -> Turn | None:
        ran.append("never")
        return turn

    # None of these checks reads the checkpoint.
    at = Checkpoint.__new__(Checkpoint)
    assert asyncio.run(pass_checks(at, Turn(_event("hi")), (tag, stop, never))) is None
    assert ran == ["tag", "stop saw tagged"]
    passed = asyncio.run(pass_checks(at, Turn(_event("hi")), (tag, tag)))
    assert passed is not None
    assert passed.verb == "tagged"


def test_a_command_is_read_with_its_bot_suffix_and_arguments() -> None:
    at = Checkpoint.__new__(Checkpoint)
    turn = asyncio.run(read_verb(at, Turn(_event("  /snooze@TeleOpsBot 12 30m\n"))))
    assert turn is not None
    assert (turn.verb, turn.args) == ("snooze", "12 30m")
    for not_a_command in ("disk is full again", "/Snooze 12"):  # verbs are lower case, as they always were
        plain = asyncio.run(read_verb(at, Turn(_event(not_a_command))))
        assert plain is not None
        assert (plain.verb, plain.args) == ("", ""), not_a_command
    button = asyncio.run(read_verb(at, Turn(_event("/ack 1", kind=EventKind.BUTTON))))
    assert button is not None
    assert button.verb == ""  # a button's text is never a command


def test_only_whoami_and_link_are_answered_before_identity() -> None:
    at = Checkpoint.__new__(Checkpoint)
    for verb in VERBS:
        turn = Turn(_event(f"/{verb}"), verb=verb)
        assert asyncio.run(open_verbs(at, turn)) is turn, verb


def test_every_verb_help_names_has_a_handler() -> None:
    named = set(re.findall(r"/([a-z]+)", HELP)) - {"whoami", "link"}
    assert named, HELP
    assert named <= set(VERBS), named - set(VERBS)
