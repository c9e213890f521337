"""Contact methods beyond chat: a person's (`users[].contacts`) and shared ones (`oncall.contacts`), each an Apprise
URL (email, ntfy, Gotify, Pushover, SMS and voice gateways, JSON webhooks: docs/contact-methods.md).

An Apprise URL carries its service's password or token, so it is a `SecretStr`: never logged, never rendered, never
written into the outbox (a row names its contact by key: `USER/NAME` for a person's, `NAME` for a shared one). What
a person sees about a contact is its key and its URL's scheme only.

Every URL is checked at load time by Apprise itself, so a typo stops the start instead of the first page at 3 a.m.
Apprise is imported only when some contact is configured (it loads ~190 plugins).
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Protocol
from urllib.parse import parse_qsl, urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from teleops.config.duration import Duration, DurationSetting

__all__ = [
    "ContactSettings",
    "ContactsSettings",
    "contact_book",
    "contact_problems",
    "quiet_apprise",
    "scheme_of",
    "scrub_secrets",
    "url_problem",
]

CONTACT_NAME = r"^[A-Za-z0-9_.-]+$"
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_MIN_SECRET_PART = 6  # path segments and query values at least this long may be tokens: masked in what we show


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ContactSettings(_Section):
    """One way to reach someone outside chat: `{name: email, url: "mailtos://user:pass@smtp.example.com?to=…"}`."""

    name: str = Field(min_length=1, max_length=64, pattern=CONTACT_NAME)
    url: SecretStr


class ContactsSettings(_Section):
    """How contact methods are delivered (the `contacts:` section)."""

    # One Apprise call (all its retries and connections) may take this long; then the row is retried later.
    notify_timeout: DurationSetting = Field("30s", validate_default=True)
    # At least this long between two messages to one contact (mail servers and webhooks are not chat APIs).
    min_interval: DurationSetting = Field("2s", validate_default=True)
    global_per_second: float = Field(default=5.0, gt=0, le=100)

    @field_validator("notify_timeout")
    @classmethod
    def _timeout(cls, value: Duration) -> Duration:
        if not 1 <= value.seconds <= 600:
            raise ValueError(f"{value.text!r} is out of range; use between 1s and 10m, e.g. 30s")
        return value

    @field_validator("min_interval")
    @classmethod
    def _interval(cls, value: Duration) -> Duration:
        if not 0 <= value.seconds <= 3600:
            raise ValueError(f"{value.text!r} is out of range; use between 0s and 1h, e.g. 2s")
        return value


class _Person(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def contacts(self) -> list[ContactSettings]: ...


def contact_book(users: Iterable[_Person], shared: Iterable[ContactSettings]) -> dict[str, SecretStr]:
    """Every configured contact by key: `USER/NAME` for a person's, `NAME` for a shared one (names cannot hold a
    "/", so the two never collide). In file order: a person's contacts keep their fallback order."""
    book = {f"{user.name}/{contact.name}": contact.url for user in users for contact in user.contacts}
    book.update({contact.name: contact.url for contact in shared})
    return book


def contact_problems(users: Sequence[_Person], shared: Sequence[ContactSettings]) -> Iterator[tuple[str, str]]:
    """(dotted key, what is wrong and what to do) for each bad contact, in file order: a name used twice by one
    person (or twice among the shared ones), and a URL Apprise cannot use. Checks URLs only when there are any."""
    for number, user in enumerate(users):
        yield from _problems(f"users.{number}.contacts", f"{user.name}/", user.contacts)
    yield from _problems("oncall.contacts", "", shared)


def _problems(where: str, prefix: str, contacts: Sequence[ContactSettings]) -> Iterator[tuple[str, str]]:
    seen: set[str] = set()
    for index, contact in enumerate(contacts):
        key = f"{prefix}{contact.name}"
        if contact.name in seen:
            yield (
                f"{where}.{index}.name",
                f"contact {key} is defined twice; give each contact its own name (they are tried in order)",
            )
        seen.add(contact.name)
        problem = url_problem(contact.url.get_secret_value())
        if problem is not None:
            yield f"{where}.{index}.url", f"contact {key}: {problem}"


def scheme_of(url: str) -> str:
    """The URL's scheme ("mailtos"), the one part of a contact URL that may be shown; "" when it has none."""
    match = _SCHEME.match(url.strip())
    return match.group(1).lower() if match else ""


def url_problem(url: str) -> str | None:
    """None when Apprise accepts `url`; else what is wrong, naming only the scheme (never the URL: it holds
    passwords and tokens) and what to do."""
    scheme = scheme_of(url)
    if not scheme:
        return "the url has no scheme; write an Apprise URL such as mailtos://… or ntfys://… (docs/contact-methods.md)"
    import apprise  # only when contacts are configured: it loads every plugin
    from apprise.manager_plugins import NotificationManager

    quiet_apprise()

    known = {str(s).lower() for s in NotificationManager().schemas()}  # type: ignore[no-untyped-call]
    if scheme not in known:
        return (
            f"Apprise does not know the scheme {scheme}://; check its spelling (e.g. mailto, mailtos, ntfys, gotifys, "
            "pover, json, jsons) against docs/contact-methods.md"
        )
    # At load time, single-threaded: a process-wide log capture cannot catch another call's lines.
    with apprise.LogCapture(level=logging.WARNING, fmt="%(message)s") as captured:  # type: ignore[no-untyped-call]
        accepted = apprise.Apprise().add(url)
    if accepted:
        return None
    said = "; ".join(line for line in scrub_secrets(captured.getvalue(), url).splitlines() if line.strip())
    because = f" ({said})" if said else ""
    return (
        f"Apprise cannot use this {scheme}:// URL{because}; a required part is missing or malformed (for email: the "
        "host and from=/to= addresses). Fix it as shown in docs/contact-methods.md"
    )


def quiet_apprise() -> None:
    """Keep Apprise's own log lines out of TeleOps' logs: at DEBUG it prints each URL it loads, masking passwords
    but not tokens that sit in the path (an ntfy topic, a webhook's secret path). What a failed delivery said reaches
    the log through the outbox worker, scrubbed (`scrub_secrets`); Apprise's per-call capture keeps working."""
    logging.getLogger("apprise").propagate = False


def scrub_secrets(text: str, url: str) -> str:
    """`text` (e.g. what Apprise logged) without the URL and its likely secret parts: the user and password, path
    segments and query values long enough to be tokens. Host names stay: they say where a delivery failed."""
    parts = urlsplit(url.strip())
    secrets = {url.strip()}
    with contextlib.suppress(ValueError):  # a malformed authority: the URL itself is still masked whole
        secrets.update(p for p in (parts.username, parts.password) if p)
    secrets.update(s for s in parts.path.split("/") if len(s) >= _MIN_SECRET_PART)
    secrets.update(v for _, v in parse_qsl(parts.query) if len(v) >= _MIN_SECRET_PART)
    for secret in sorted(secrets, key=len, reverse=True):  # longest first: a token inside the URL goes with it
        text = text.replace(secret, "***")
    return text
