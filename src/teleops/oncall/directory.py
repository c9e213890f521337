"""The on-call directory: rotations, team policies and chats from config, and who a target means now.

Rotations merge the overrides of teleops.yaml with those made in the web UI (store/oncall_overrides.py). Every
consumer loads the stored ones first (`load_overrides`, in its own transaction), so paging, /oncall, handovers, the
On call page and the calendar feeds all see the same cover, on every replica.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from teleops.config import Settings
from teleops.config.oncall import DEFAULT_TEAM, EscalationStep
from teleops.domain.rotation import Override, Rotation
from teleops.oncall.escalation import Step
from teleops.store.database import Transaction as Connection
from teleops.store.oncall_overrides import StoredOverride, live_overrides

__all__ = ["OVERRIDE_LOOKBACK", "ChatTarget", "OnCallDirectory", "OnCallNow", "Page"]

# Stored overrides that ended this long ago are still loaded: a handover looks back to the previous shift's start.
OVERRIDE_LOOKBACK = timedelta(days=31)


@dataclass(frozen=True, slots=True)
class ChatTarget:
    platform: str
    chat_id: str


@dataclass(frozen=True, slots=True)
class Page:
    """Whom a target means at an instant: people (to reach in their own chats) and/or a shared chat."""

    target: str
    users: tuple[str, ...] = ()
    chat: ChatTarget | None = None


@dataclass(frozen=True, slots=True)
class OnCallNow:
    rotation: str
    current: str
    until: datetime
    next: str
    overridden: bool


class OnCallDirectory:
    """Built once from settings; pure lookups (the chats people linked at runtime come from the store)."""

    def __init__(self, settings: Settings) -> None:
        oncall = settings.oncall
        # As written in teleops.yaml; `rotations` adds the stored overrides (`use_stored_overrides`).
        self.configured_rotations: dict[str, Rotation] = {
            r.name: Rotation(
                r.name,
                tuple(r.members),
                int(r.shift.seconds),
                handoff=r.handoff,
                tz=r.tz,
                overrides=tuple(Override(o.user, o.start, o.end) for o in r.overrides),
            )
            for r in oncall.rotations
        }
        self.rotations: dict[str, Rotation] = dict(self.configured_rotations)
        self.stored_overrides: tuple[StoredOverride, ...] = ()
        self.policies: dict[str, tuple[tuple[Step, ...], int]] = {
            DEFAULT_TEAM: (_steps(oncall.escalation), oncall.repeat)
        }
        for team in oncall.teams:
            self.policies[team.name] = (_steps(team.escalation), team.repeat)
        self.chats = {name: ChatTarget(chat.platform, chat.id) for name, chat in oncall.chats.items()}
        self.routes = tuple(oncall.routes)
        self.remind_after = oncall.remind_acked_after.timedelta
        self.delivery_deadline = oncall.delivery_deadline.timedelta
        self.admins = tuple(user.name for user in settings.users if user.role == "admin")
        self._configured: dict[str, list[ChatTarget]] = {}
        # Each person's contact methods beyond chat, by name, in the order a failed page tries them.
        self._contacts: dict[str, tuple[str, ...]] = {
            user.name: tuple(contact.name for contact in user.contacts) for user in settings.users
        }
        for user in settings.users:
            chats = self._configured.setdefault(user.name, [])
            if user.telegram_id is not None:
                chats.append(ChatTarget("telegram", str(user.telegram_id)))  # a private chat's id is the user's id
            if user.slack_id:
                chats.append(ChatTarget("slack", user.slack_id.split("/")[-1]))  # TEAM/USER -> USER (DM)

    def load_overrides(self, conn: Connection, now: datetime) -> None:
        """Merge the overrides stored now (made in the web UI) into `rotations`; call it in the caller's transaction
        before asking who is on call. Propagates database errors (the previous merge stays in force)."""
        self.use_stored_overrides(live_overrides(conn, ending_after=now - OVERRIDE_LOOKBACK))

    def use_stored_overrides(self, stored: Sequence[StoredOverride]) -> None:
        """Rotations become their configured overrides plus `stored` (newest first), which win where they overlap
        one from config: the latest decision is the one in force. Overrides of rotations no longer configured are
        ignored."""
        merged = {}
        for name, rotation in self.configured_rotations.items():
            extra = tuple(Override(o.user, o.start, o.end) for o in stored if o.rotation == name)
            merged[name] = replace(rotation, overrides=(*extra, *rotation.overrides)) if extra else rotation
        self.stored_overrides = tuple(stored)
        self.rotations = merged  # one assignment: a reader sees the old merge or the new one, never half of each

    def policy(self, team: str) -> tuple[tuple[Step, ...], int]:
        """(steps, repeat) of `team`; an unknown team (config changed since) falls back to the default."""
        return self.policies.get(team) or self.policies[DEFAULT_TEAM]

    def resolve(self, target: str, at: datetime) -> Page:
        """`rotation:NAME` -> the person on call at `at`; `user:NAME` -> that person; `chat:NAME` -> the chat;
        `contact:NAME` -> a shared contact method (a team mailbox, a webhook)."""
        kind, _, name = target.partition(":")
        if kind == "contact":
            return Page(target, chat=ChatTarget("contact", name))
        if kind == "rotation":
            rotation = self.rotations.get(name)
            return Page(target, (rotation.on_call(at),) if rotation else ())
        if kind == "user":
            return Page(target, (name,))
        return Page(target, chat=self.chats.get(name))

    def contacts_of(self, user: str) -> tuple[str, ...]:
        """The names of `user`'s contact methods (`users: - contacts:`), in order."""
        return self._contacts.get(user, ())

    def configured_chats(self, user: str) -> Sequence[ChatTarget]:
        return tuple(self._configured.get(user, ()))

    def on_call_now(self, at: datetime) -> list[OnCallNow]:
        """Who is on call now and next, per rotation."""
        result = []
        for rotation in self.rotations.values():
            shift = rotation.shift_at(at)
            until, following = rotation.next_handoff(at)
            result.append(OnCallNow(rotation.name, shift.user, until, following, shift.overridden))
        return result


def _steps(steps: Sequence[EscalationStep]) -> tuple[Step, ...]:
    return tuple(Step(s.after.timedelta, s.notify) for s in steps)
