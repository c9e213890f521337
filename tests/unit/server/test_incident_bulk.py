"""What a bulk Ack / Resolve reports, and how it travels through the redirect without becoming free text."""

from __future__ import annotations

from teleops.server.incident_bulk import MAX_BULK, BulkOutcome, describe_problem, selection_problem


def test_the_summary_says_what_changed_and_what_was_left_as_it_was() -> None:
    outcome = BulkOutcome("ack", changed=(4, 5, 6), already={"resolved": (7,)}, missing=(9,))
    assert outcome.summary() == (
        "Acknowledged 3: #4, #5, #6. Left as they were: 1 already resolved (#7). 1 not found (#9): reload the list."
    )
    assert BulkOutcome("resolve").summary() == "Resolved 0."
    untried = BulkOutcome("resolve", changed=(1,), untried=(2, 3)).summary()
    assert "2 not tried (#2, #3): the database stopped answering" in untried


def test_long_id_lists_are_shortened() -> None:
    summary = BulkOutcome("resolve", changed=tuple(range(1, 31))).summary()
    assert summary.startswith("Resolved 30: #1, #2,")
    assert "#20 and 10 more." in summary


def test_the_outcome_survives_the_redirect_query_and_nothing_else_does() -> None:
    outcome = BulkOutcome("ack", changed=(1, 2), already={"acknowledged": (3,), "resolved": (4,)}, missing=(5,))
    assert BulkOutcome.from_params(outcome.to_params()) == outcome
    assert BulkOutcome.from_params({}) is None
    assert BulkOutcome.from_params({"done": "reboot", "changed": "1"}) is None
    forged = BulkOutcome.from_params({"done": "ack", "changed": "1,<b>x</b>,-3,2", "already_pwned": "4"})
    assert forged == BulkOutcome("ack", changed=(1, 2))


def test_a_selection_is_refused_with_a_code_and_the_code_becomes_the_message() -> None:
    assert selection_problem("ack", ["1", "2"]) is None
    assert selection_problem("snooze", ["1"]) == "action"
    assert selection_problem("ack", []) == "none"
    assert selection_problem("resolve", ["1", "x"]) == "ids"
    assert selection_problem("resolve", ["1", "0"]) == "ids"
    assert selection_problem("ack", [str(i) for i in range(1, MAX_BULK + 1)]) is None
    assert selection_problem("ack", [str(i) for i in range(1, MAX_BULK + 2)]) == "too_many"
    message = describe_problem("too_many", str(MAX_BULK + 1))
    assert message is not None
    assert message.startswith(f"{MAX_BULK + 1} incidents were selected; at most {MAX_BULK}")
    assert "Nothing was changed" in message
    assert describe_problem("Your session expired, call 555", "1") is None
    assert describe_problem("", "") is None
