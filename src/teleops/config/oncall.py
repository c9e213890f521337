"""The `oncall:` section: rotations, escalation policies per team, routes, named chats, reminders.

The top-level `rotations` and `escalation` (docs/architecture.md, "Public surface") are the default team's; `teams`
add more, and `routes` send alerts to a team by source, severity and labels. The names an escalation step or a rotation
gives (rotations, chats, people) are checked by `Settings`, which also knows the `users:` section.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection, Iterator
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from teleops.config.contacts import ContactSettings
from teleops.config.duration import Duration, DurationSetting
from teleops.domain.rotation import RotationError, parse_handoff

__all__ = [
    "ChatSettings",
    "EscalationStep",
    "OncallSettings",
    "OverrideSettings",
    "RotationSettings",
    "RouteSettings",
    "TeamSettings",
]

DEFAULT_TEAM = "default"
_TARGET = re.compile(r"^(rotation|user|chat|contact):[A-Za-z0-9_.@:-]+$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _duration(value: Duration) -> Duration:
    if value.seconds < 0:
        raise ValueError("must not be negative")
    return value


class OverrideSettings(_Section):
    """`user` covers the rotation from `start` to `end` (ISO 8601 with an offset, e.g. 2026-11-24T18:00:00+01:00)."""

    user: str
    start: datetime
    end: datetime

    @model_validator(mode="after")
    def _ordered_and_aware(self) -> OverrideSettings:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("override times need an offset, e.g. 2026-11-24T18:00:00+01:00")
        if self.end <= self.start:
            raise ValueError("override ends before it starts")
        return self


class RotationSettings(_Section):
    name: str
    members: list[str] = Field(min_length=1)
    shift: DurationSetting = Field("7d", validate_default=True)
    handoff: str = "Mon 09:00"
    tz: str = "UTC"
    overrides: list[OverrideSettings] = Field(default_factory=list)

    @field_validator("shift")
    @classmethod
    def _shift(cls, value: Duration) -> Duration:
        if value.seconds <= 0:
            raise ValueError("must be positive, e.g. 1d or 7d")
        return value

    @field_validator("handoff")
    @classmethod
    def _handoff(cls, value: str) -> str:
        try:
            parse_handoff(value)
        except RotationError as exc:
            raise ValueError(str(exc)) from exc
        return value


class EscalationStep(_Section):
    after: DurationSetting = Field("0m", validate_default=True)
    notify: str

    _after = field_validator("after")(_duration)

    @field_validator("notify")
    @classmethod
    def _target(cls, value: str) -> str:
        if not _TARGET.match(value):
            raise ValueError("write rotation:NAME, user:NAME, chat:NAME or contact:NAME")
        return value


class ChatSettings(_Section):
    """A named chat for `notify: chat:NAME` (a Telegram group id, a Slack channel id, or the web console)."""

    platform: Literal["telegram", "slack", "console"]
    id: str


class TeamSettings(_Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    escalation: list[EscalationStep] = Field(min_length=1)
    repeat: int = Field(default=0, ge=0, le=20)


class RouteSettings(_Section):
    """Alerts matching every given condition go to `team`; the first matching route wins."""

    team: str
    source: list[str] = Field(default_factory=list)
    severity: list[str] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict, description="label name -> glob, e.g. {service: 'db-*'}")


class OncallSettings(_Section):
    rotations: list[RotationSettings] = Field(default_factory=list)
    escalation: list[EscalationStep] = Field(default_factory=list)
    repeat: int = Field(default=0, ge=0, le=20, description="Run the default escalation again this many times.")
    teams: list[TeamSettings] = Field(default_factory=list)
    routes: list[RouteSettings] = Field(default_factory=list)
    chats: dict[str, ChatSettings] = Field(default_factory=dict)
    # Shared contact methods (Apprise URLs) for `notify: contact:NAME` steps, e.g. a team mailbox or a pager gateway.
    contacts: list[ContactSettings] = Field(default_factory=list)
    remind_acked_after: DurationSetting = Field("1h", validate_default=True)
    # A page not delivered this long after it was queued counts as failed: it goes to the person's next contact
    # method and the escalation's next step runs now (oncall/delivery.py).
    delivery_deadline: DurationSetting = Field("1m", validate_default=True)
    alertmanager_url: str | None = Field(
        default=None,
        description="Alertmanager base URL (http://host:9093): snoozing an Alertmanager incident silences it there.",
    )

    _remind = field_validator("remind_acked_after")(_duration)

    @field_validator("delivery_deadline")
    @classmethod
    def _deadline(cls, value: Duration) -> Duration:
        if value.seconds < 1:
            raise ValueError("must be at least 1s, e.g. 1m")
        return value

    @model_validator(mode="after")
    def _references_exist(self) -> OncallSettings:
        rotations = {r.name for r in self.rotations}
        if len(rotations) != len(self.rotations):
            raise ValueError("two rotations share a name")
        teams = {t.name for t in self.teams} | {DEFAULT_TEAM}
        if len(teams) != len(self.teams) + 1:
            raise ValueError(f"two teams share a name (or one is called {DEFAULT_TEAM!r}, which is reserved)")
        for route in self.routes:
            if route.team not in teams:
                raise ValueError(f"route to unknown team {route.team!r}; teams: {', '.join(sorted(teams))}")
        return self

    def _keyed_steps(self) -> Iterator[tuple[str, EscalationStep]]:
        """(key under `oncall`, step) of every escalation step: the default team's, then each team's."""
        for index, step in enumerate(self.escalation):
            yield f"escalation.{index}", step
        for number, team in enumerate(self.teams):
            for index, step in enumerate(team.escalation):
                yield f"teams.{number}.escalation.{index}", step

    def unknown_names(self, users: Collection[str]) -> Iterator[tuple[str, str]]:
        """(key under `oncall`, what is wrong and what to do) for every name here that is not defined, in file
        order: rotation members and override users missing from `users`, and escalation targets `user:NAME`
        (a person missing from `users`), `rotation:NAME` (no such rotation), `chat:NAME` (not under chats) and
        `contact:NAME` (not under contacts)."""
        rotations = [r.name for r in self.rotations]
        for number, rotation in enumerate(self.rotations):
            for index, member in enumerate(rotation.members):
                if member not in users:
                    yield f"rotations.{number}.members.{index}", _undefined("user", member, users)
            for index, override in enumerate(rotation.overrides):
                if override.user not in users:
                    yield f"rotations.{number}.overrides.{index}.user", _undefined("user", override.user, users)
        for key, step in self._keyed_steps():
            kind, _, name = step.notify.partition(":")
            if kind == "user" and name not in users:
                yield f"{key}.notify", _undefined("user", name, users)
            elif kind == "rotation" and name not in rotations:
                yield f"{key}.notify", _undefined("rotation", name, rotations)
            elif kind == "chat" and name not in self.chats:
                yield f"{key}.notify", _undefined("chat", name, self.chats)
            elif kind == "contact" and name not in {c.name for c in self.contacts}:
                yield f"{key}.notify", _undefined("contact", name, [c.name for c in self.contacts])


_DEFINE_UNDER = {"user": "users:", "rotation": "oncall.rotations", "chat": "oncall.chats", "contact": "oncall.contacts"}


def _undefined(kind: str, name: str, defined: Collection[str]) -> str:
    """What is wrong and what to do, e.g. "'dvae' is not a defined user (did you mean 'dave'?); define it under
    users: or fix the name"."""
    close = difflib.get_close_matches(name, sorted(defined), n=1, cutoff=0.7)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{name!r} is not a defined {kind}{hint}; define it under {_DEFINE_UNDER[kind]} or fix the name"
