"""Runbooks: one YAML file per alert name with read-only diagnostics and suggested fixes.

Commands are written as argv lists. An element that is exactly `{param}` is a slot, filled from an alert label
only after that label's value passes the parameter's own check (`regex`, matched in full, or `enum`); a value
that fails, is missing, starts with `-` or holds whitespace or control characters makes the step
*unavailable* — it never becomes argv text (docs/architecture.md, "Invariants" 7: labels are untrusted). Partial
templates such as `--unit={x}` are refused when the file loads: a slot is always a whole argument.

    alert: NginxDown
    description: nginx stopped answering
    params:
      service: {label: service, regex: "^[a-z][a-z0-9@._-]{0,63}$"}
    diagnostics:
      - {name: status, command: [systemctl, status, "{service}"], auto: true}
    fixes:
      - {name: restart, command: [systemctl, restart, "{service}"]}
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = ["BoundStep", "Param", "Runbook", "RunbookError", "RunbookStep", "bind", "load_runbooks", "parse_runbook"]

_SLOT = re.compile(r"^\{([a-z_][a-z0-9_]{0,31})\}$")
_BAD_CHARS = re.compile(r"[\s\x00-\x1f\x7f]")
MAX_VALUE_CHARS = 256


class RunbookError(ValueError):
    """A runbook file is unusable; the message names the file and the key."""


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    label: str
    regex: re.Pattern[str] | None = None
    enum: tuple[str, ...] = ()

    def check(self, value: str | None) -> str | None:
        """Why `value` may not fill this slot, or None when it may."""
        if value is None or value == "":
            return f"the alert has no {self.label!r} label"
        if value.startswith("-"):
            return f"label {self.label!r} starts with '-' (it would read as an option)"
        if len(value) > MAX_VALUE_CHARS or _BAD_CHARS.search(value):
            return f"label {self.label!r} holds whitespace or control characters, or is too long"
        if self.enum and value not in self.enum:
            return f"label {self.label!r} is not one of {', '.join(self.enum)}"
        if self.regex is not None and self.regex.fullmatch(value) is None:
            return f"label {self.label!r} does not match {self.regex.pattern}"
        return None


@dataclass(frozen=True, slots=True)
class RunbookStep:
    name: str
    argv: tuple[str, ...]
    auto: bool = False


@dataclass(frozen=True, slots=True)
class Runbook:
    alert: str
    description: str
    params: Mapping[str, Param]
    diagnostics: tuple[RunbookStep, ...]
    fixes: tuple[RunbookStep, ...]
    path: Path | None = None


@dataclass(frozen=True, slots=True)
class BoundStep:
    """A step with its slots filled: `argv` when available, else `unavailable` says why."""

    step: RunbookStep
    argv: tuple[str, ...] | None
    unavailable: str | None = None


def bind(runbook: Runbook, step: RunbookStep, labels: Mapping[str, str]) -> BoundStep:
    """Fill `step`'s slots from `labels` through each parameter's check. Never raises."""
    argv: list[str] = []
    for part in step.argv:
        slot = _SLOT.match(part)
        if slot is None:
            argv.append(part)
            continue
        param = runbook.params[slot.group(1)]
        value = labels.get(param.label)
        problem = param.check(value)
        if problem is not None:
            return BoundStep(step, None, problem)
        assert value is not None
        argv.append(value)
    return BoundStep(step, tuple(argv))


def _param(where: str, name: str, raw: Any) -> Param:
    if not isinstance(raw, dict) or not isinstance(raw.get("label"), str):
        raise RunbookError(f"{where}.params.{name}: give `label:` (the alert label to read) and `regex:` or `enum:`")
    regex = raw.get("regex")
    enum = raw.get("enum")
    if (regex is None) == (enum is None):
        raise RunbookError(f"{where}.params.{name}: give exactly one of `regex:` or `enum:` to check the value")
    if regex is not None:
        try:
            return Param(name, raw["label"], regex=re.compile(str(regex)))
        except re.error as exc:
            raise RunbookError(f"{where}.params.{name}.regex: not a regular expression: {exc}") from exc
    if not isinstance(enum, list) or not enum:
        raise RunbookError(f"{where}.params.{name}.enum: give a list of allowed values")
    return Param(name, raw["label"], enum=tuple(str(v) for v in enum))


def _steps(where: str, key: str, raw: Any, params: Mapping[str, Param]) -> tuple[RunbookStep, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise RunbookError(f"{where}.{key}: give a list of steps")
    steps = []
    for index, item in enumerate(raw):
        at = f"{where}.{key}.{index}"
        command = item.get("command") if isinstance(item, dict) else None
        if not isinstance(command, list) or not command or not all(isinstance(p, str) and p for p in command):
            raise RunbookError(f"{at}.command: write the command as an argv list, e.g. [systemctl, status, nginx]")
        for part in command:
            slot = _SLOT.match(part)
            if slot is not None and slot.group(1) not in params:
                raise RunbookError(f"{at}.command: slot {part} names no parameter under params:")
            if slot is None and ("{" in part or "}" in part):
                raise RunbookError(f"{at}.command: {part!r} — a slot must be a whole argument like {{service}}")
        auto = bool(item.get("auto", False))
        if auto and key != "diagnostics":
            raise RunbookError(f"{at}.auto: only read-only diagnostics may run automatically, never fixes")
        steps.append(RunbookStep(str(item.get("name") or " ".join(command)), tuple(command), auto))
    return tuple(steps)


def parse_runbook(raw: Any, *, where: str, path: Path | None = None) -> Runbook:
    """One runbook from its YAML data. Raises RunbookError naming `where` and the key."""
    if not isinstance(raw, dict) or not isinstance(raw.get("alert"), str) or not raw["alert"]:
        raise RunbookError(f"{where}: a runbook is a mapping with `alert: ALERTNAME`")
    params_raw = raw.get("params") or {}
    if not isinstance(params_raw, dict):
        raise RunbookError(f"{where}.params: give a mapping of parameter name -> {{label, regex|enum}}")
    params = {}
    for name, value in params_raw.items():
        if not isinstance(name, str) or _SLOT.match("{" + name + "}") is None:
            raise RunbookError(f"{where}.params.{name}: names are lower-case letters, digits and _")
        params[name] = _param(where, name, value)
    return Runbook(
        alert=raw["alert"],
        description=str(raw.get("description") or ""),
        params=params,
        diagnostics=_steps(where, "diagnostics", raw.get("diagnostics"), params),
        fixes=_steps(where, "fixes", raw.get("fixes"), params),
        path=path,
    )


def load_runbooks(directory: Path) -> dict[str, Runbook]:
    """Every `*.yaml`/`*.yml` in `directory`, by alert name. A missing directory means no runbooks.

    Raises RunbookError for a file that cannot be read or parsed, or two files for one alert.
    """
    if not directory.is_dir():
        return {}
    found: dict[str, Runbook] = {}
    for path in sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")]):
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise RunbookError(f"{path}: cannot read the runbook: {exc}") from exc
        runbook = parse_runbook(raw, where=str(path), path=path)
        if runbook.alert in found:
            raise RunbookError(f"{path}: alert {runbook.alert!r} already has a runbook in {found[runbook.alert].path}")
        found[runbook.alert] = runbook
    return found
