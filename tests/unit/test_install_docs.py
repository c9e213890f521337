"""The docs show only install commands that a test runs (tests/install_commands.py), and they agree with the
package: the wheel's file name carries this version, and the lock files pin what pyproject.toml asks for."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

import teleops
from teleops.config.packages import FEATURE_PACKAGES
from tests.install_commands import all_commands

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md"), *(ROOT / "deploy").rglob("*.md")])
_INSTALL = re.compile(r"pip install|pip download|-m venv|scripts/(serve|test|wheel)\b")
_FENCE = re.compile(r"^```(\w*)\s*$")
_SHELL_FENCES = {"sh", "bash", "shell", "console", ""}


def _normalise(line: str) -> str:
    line = re.sub(r"\s+#.*$", "", line.strip())  # a trailing comment
    line = line.removeprefix("$ ").removeprefix("sudo ")
    return " ".join(line.split())


def _install_commands(path: Path) -> list[tuple[int, str]]:
    """(line number, command) for each install command: lines of shell code blocks and `inline code` in prose."""
    found: list[tuple[int, str]] = []
    fence: str | None = None
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        opening = _FENCE.match(line.strip())
        if opening:
            fence = None if fence is not None else opening.group(1)
            continue
        if fence is not None:
            if fence in _SHELL_FENCES and _INSTALL.search(line):
                found.append((number, _normalise(line)))
            continue
        for span in re.findall(r"`([^`]+)`", line):
            # A whole command, not a mention of one (`pip install` alone names the tool).
            if _INSTALL.search(span) and (len(span.split()) >= 3 or span.strip().startswith("scripts/")):
                found.append((number, _normalise(span)))
    return found


def test_every_documented_install_command_is_run_by_a_test() -> None:
    known = all_commands()
    missing = [
        f"{path.relative_to(ROOT)}:{number}: {command}"
        for path in DOCS
        for number, command in _install_commands(path)
        if command not in known
    ]
    assert not missing, "install commands in the docs that no test runs (add them to tests/install_commands.py):\n" + (
        "\n".join(missing)
    )


def test_the_scan_finds_the_readme_quick_start_and_the_agent_install() -> None:
    readme = [command for _, command in _install_commands(ROOT / "README.md")]
    agent = [command for _, command in _install_commands(ROOT / "docs" / "install-agent.md")]
    assert "scripts/serve" in readme
    assert "scripts/test" in readme
    assert "/opt/teleops/bin/pip install --no-deps /tmp/teleops-0.1.0-py3-none-any.whl" in agent


def test_documented_wheel_names_carry_this_version() -> None:
    names = {name for path in DOCS for name in re.findall(r"teleops-([0-9][^-]*)-py3-none-any\.whl", path.read_text())}
    assert names == {teleops.__version__}


def _pins(lock: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in lock.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)==([^ ;\\]+)", line)
        if match:
            pins[re.sub(r"[-_.]+", "-", match.group(1)).lower()] = match.group(2)
    return pins


def _name(requirement: str) -> str:
    match = re.match(r"^([A-Za-z0-9_.\-]+)", requirement)
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def _project() -> dict[str, object]:
    with (ROOT / "pyproject.toml").open("rb") as file:
        project: dict[str, object] = tomllib.load(file)["project"]
    return project


@pytest.mark.parametrize(("lock", "extras"), [("serve.lock", ()), ("test.lock", ("all", "dev"))])
def test_locks_pin_every_declared_dependency(lock: str, extras: tuple[str, ...]) -> None:
    project = _project()
    wanted = list(project["dependencies"])  # type: ignore[call-overload]
    for extra in extras:
        wanted += project["optional-dependencies"][extra]  # type: ignore[index]
    pins = _pins(ROOT / "requirements" / lock)
    assert not [_name(r) for r in wanted if _name(r) not in pins], f"regenerate with scripts/lock ({lock})"
    assert all("--hash=sha256:" in block for block in (ROOT / "requirements" / lock).read_text().split(" \\\n    #"))


def test_test_lock_and_agent_lock_pin_the_same_versions_as_serve_lock() -> None:
    serve = _pins(ROOT / "requirements" / "serve.lock")
    for other in ("test.lock", "agent.lock"):
        pins = _pins(ROOT / "requirements" / other)
        differ = {name: (pins[name], serve[name]) for name in pins.keys() & serve.keys() if pins[name] != serve[name]}
        assert not differ, f"{other} pins differ from serve.lock: {differ}; regenerate with scripts/lock"


def test_the_agent_lock_holds_only_the_agent_imports_and_their_dependencies() -> None:
    pins = _pins(ROOT / "requirements" / "agent.lock")
    for heavy in ("fastapi", "starlette", "sqlalchemy", "alembic", "jinja2", "uvicorn", "python-telegram-bot"):
        assert heavy not in pins


def test_feature_packages_ask_for_the_ranges_pyproject_declares() -> None:
    project = _project()
    declared = {
        _name(r): r
        for r in [*project["dependencies"], *project["optional-dependencies"]["all"]]  # type: ignore[misc, index]
    }
    for need in FEATURE_PACKAGES:
        assert declared.get(_name(need.requirement)) == need.requirement, need
