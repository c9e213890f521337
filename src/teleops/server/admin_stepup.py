"""What the admin pages (People, Tokens) share: the acting admin's step-up code, where a role is declared, and
telling the affected person in their chat (issue #24).

Creating a token or an invite, adding a person, changing a role and resetting someone's 2FA each need a current
code from the acting admin's own authenticator, in the same form. The code is judged by the same TOTP state as chat
`/otp` and the web sign-in (store/twofactor.py): a wrong one counts toward the same lock, a used one is not accepted
twice. An admin with no authenticator enrolled is sent to /ui/account/2fa first: there is nothing to check.

A person declared under `users:` in the config has their role there: the UI shows it read-only and the server
refuses to change it (docs/access-control.md, "Who sets a role"). Whether someone is declared is read from the
loaded settings at each request, never stored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from teleops.commands.authorize import current_policy
from teleops.config import Settings
from teleops.domain.message import Message
from teleops.server.services import Services
from teleops.store.database import StorageUnavailable, Transaction
from teleops.store.twofactor import NotEnrolled, TwoFactorKeyMissing

__all__ = ["PersonNotice", "StepUpRefused", "check_admin_code", "declared_in_config", "known_roles", "stepup_ready"]

ENROL_FIRST = (
    "This needs a code from your own authenticator app, and you have none enrolled. Enrol one at /ui/account/2fa "
    "first, then come back."
)


class StepUpRefused(Exception):
    """The step-up code was missing, wrong or could not be checked; nothing changed. `status` is the HTTP answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def declared_in_config(settings: Settings, name: str) -> bool:
    """Whether `name` is under `users:` in the loaded config (then the config owns their role)."""
    return any(user.name == name for user in settings.users)


def known_roles() -> list[str]:
    """The roles the policy in force defines, by name (a role outside it could run nothing)."""
    return sorted(current_policy().roles)


async def stepup_ready(services: Services, admin: str) -> bool:
    """Whether `admin` can give a step-up code here (a TOTP authenticator is enrolled). Raises StorageUnavailable."""
    return await services.stepup.state(admin) is not None


async def check_admin_code(services: Services, admin: str, code: str) -> None:
    """Accept `code` as `admin`'s current TOTP code, or raise StepUpRefused saying what to do (nothing changes).

    A blank code is refused without counting; any other code is judged, counted and audited like every code
    (`2fa.accepted` / `2fa.rejected` with `via: web-stepup`).
    """
    store = services.stepup
    if store is None:
        raise StepUpRefused(503, "Nothing changed: 2FA is not set up in this process yet; retry in a minute.")
    code = code.strip().replace(" ", "")
    if not code:
        raise StepUpRefused(400, "Nothing changed: enter the 6-digit code your authenticator app shows now.")
    try:
        judgement = await store.verify(admin, code, now=services.clock(), via="web-stepup")
    except NotEnrolled as exc:
        raise StepUpRefused(403, f"Nothing changed. {ENROL_FIRST}") from exc
    except TwoFactorKeyMissing as exc:
        raise StepUpRefused(503, f"Nothing changed: {exc}.") from exc
    except StorageUnavailable as exc:
        raise StepUpRefused(503, "Nothing changed: the database is unavailable; retry in a minute.") from exc
    if not judgement.accepted:
        raise StepUpRefused(401, f"Nothing changed: {judgement.message.replace('USER', admin)}.")


@dataclass(slots=True)
class PersonNotice:
    """Tells `user` `message` in their chats, inside the transaction of the change it tells of (pass it as the
    store's `also`/`before`); `sent()` after the commit wakes the outbox. `platforms` says where it went."""

    services: Services
    user: str
    message: Message
    now: datetime
    platforms: list[str] = field(default_factory=list)

    def __call__(self, conn: Transaction) -> None:
        oncall = self.services.oncall
        if oncall is not None:
            self.platforms = oncall.worker.tell_person(conn, self.user, self.message, self.now)

    def sent(self) -> str:
        """Wake the outbox; a sentence for the admin saying whether (and where) the person was told."""
        if not self.platforms:
            return f"{self.user} has no chat account TeleOps knows, so they were not told: tell them yourself."
        self.services.oncall.worker.wake_outbox()
        return f"{self.user} was told in {', '.join(sorted(set(self.platforms)))}."
