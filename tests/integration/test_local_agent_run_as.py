"""The embedded local agent runs commands as its own unprivileged user, with no access to TeleOps' data (docs/threat-model.md
T33, issue #16.5): a real `teleops serve` as root (CI's user), commands sent over the HTTP API."""

from __future__ import annotations

import pwd
import stat
from collections.abc import Callable

from tests.integration.servers import TeleopsServer, eventually
from tests.integration.test_agent_e2e import agent_online, final, run_command


def test_local_commands_run_as_nobody_and_cannot_read_the_database(
    teleops_server: Callable[..., TeleopsServer],
) -> None:
    server = teleops_server(local_agent=True)
    eventually(lambda: agent_online(server, "localhost"), what="the embedded local agent to connect")
    assert stat.S_IMODE(server.data_dir.stat().st_mode) == 0o700

    who = final(server, run_command(server, "localhost", "id -u"))
    assert who["status"] == "succeeded", who
    assert who["output"].strip() == str(pwd.getpwnam("nobody").pw_uid)

    for target in (server.data_dir / "teleops.db", server.data_dir / "local-agent.token", server.data_dir):
        attempt = final(server, run_command(server, "localhost", f"ls -l {target}"))
        assert attempt["status"] == "failed", attempt
        assert "denied" in attempt["output"]  # "Permission denied" (the word after "token" is masked as a secret)


def test_run_as_root_is_refused_with_a_reason_and_no_local_agent_starts(
    teleops_server: Callable[..., TeleopsServer],
) -> None:
    server = teleops_server(config={"local_agent": {"enabled": True, "run_as": "root"}})
    refused = eventually(
        lambda: log if "local_agent.refused" in (log := server.log.read_text()) else None,
        what="the refusal in the log",
    )
    assert "name an unprivileged user" in refused
    # The refusal comes before the supervisor (both in the startup that /readyz waited for): no child was started.
    assert "local_agent.started" not in server.log.read_text()
    assert agent_online(server, "localhost") is None
