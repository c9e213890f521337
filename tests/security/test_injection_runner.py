"""Shell injection corpus through the REAL runner (docs/threat-model.md T10): the typed text is split the way the pipeline
splits it (shlex, no shell) and the argv is run by `teleops.agent.runner.run` in a temp directory. No payload
may create the canary file; each one that runs prints its metacharacters as plain text."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from teleops.agent.runner import RunSpec, run
from teleops.commands.command_line import CommandLineError, split_command

PAYLOADS = [
    "echo hi; touch {canary}",
    "echo hi && touch {canary}",
    "echo hi || touch {canary}",
    "echo hi | touch {canary}",
    "echo $(touch {canary})",
    'echo "$(touch {canary})"',
    "echo `touch {canary}`",
    "echo hi\ntouch {canary}",
    "echo hi > {canary}",
    "echo hi >> {canary}",
    "echo ${{IFS}}touch${{IFS}}{canary}",
    "echo hi & touch {canary}",
    "echo $'\\x3b' touch {canary}",
    "echo hi%0atouch {canary}",
]
UNBALANCED = ["echo 'touch {canary}", 'echo "touch {canary}', "echo \\"]


@pytest.mark.parametrize("payload", PAYLOADS)
async def test_metacharacters_reach_the_command_as_text_and_never_run_a_shell(payload: str, tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    typed = payload.format(canary=canary)
    argv = split_command(typed)
    result = await run(RunSpec(argv=argv, timeout_s=10, cwd=str(tmp_path), use_cgroup=False))
    assert result.error is None
    assert result.exit_code == 0
    assert not canary.exists()
    assert list(tmp_path.iterdir()) == []
    assert result.output.decode() == " ".join(argv[1:]) + "\n"  # echo printed the tokens, literally


@pytest.mark.parametrize("payload", UNBALANCED)
def test_unbalanced_quotes_are_refused_before_anything_runs(payload: str, tmp_path: Path) -> None:
    with pytest.raises(CommandLineError):
        split_command(payload.format(canary=tmp_path / "canary"))


async def test_an_argv_token_that_looks_like_a_script_is_one_argument(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    argv = ["printf", "%s\n", f"$(touch {canary}); `touch {canary}`"]
    result = await run(RunSpec(argv=argv, timeout_s=10, cwd=str(tmp_path), use_cgroup=False))
    assert result.output.decode() == argv[2] + "\n"
    assert not canary.exists()
    assert shlex.split(shlex.join(argv)) == argv
