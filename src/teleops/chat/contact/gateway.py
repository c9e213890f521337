"""Contact methods (email, ntfy, Gotify, Pushover, SMS/voice gateways, JSON webhooks) as one Gateway, through Apprise.

Why one notification library rather than one client per service: Apprise speaks ~190 services from one URL syntax,
so a new way to reach people is a config line, not a module (issue #20). It is delivered like every chat message: an
outbox row first, then this gateway, so pages to contacts get the same guarantees (durable before sent, retried with
backoff, rate limited per contact and overall, at least once).

A chat id here is a contact *key*: `USER/NAME` for a person's contact, `NAME` for a shared one. The key is resolved
to its URL only at send time, so no URL (they carry passwords and tokens) is ever written into the outbox, and
what the worker logs or stores about a failure names the key and the URL's scheme only.

Apprise answers a delivery with success or failure; the reason is in what it logged during that call, which its
result keeps per call (a global log handler would mix the reasons of concurrent deliveries). Any failure is
`RetryLater`: Apprise does not say whether it was the mail server being down or a wrong password, and a page must not
be dropped for a reason that may pass. An unknown key (the config changed since the row was queued) is refused.

Blocking plugins (SMTP) run in Apprise's thread pool, asynchronous ones on the loop: one slow mail server never
holds the event loop, and `notify_timeout` bounds each call.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import apprise
import structlog
from pydantic import SecretStr

from teleops.chat.base import Capabilities, DeliveryRefused, EventHandler, Formatting, RateLimits, Rendered, RetryLater
from teleops.chat.input_watch import InputWatch
from teleops.config.contacts import quiet_apprise, scheme_of, scrub_secrets

__all__ = ["CONTACT_PLATFORM", "ContactGateway", "contact_capabilities"]

log = structlog.get_logger(__name__)

CONTACT_PLATFORM = "contact"
MAX_MESSAGE_CHARS = 8000  # an email or webhook takes more, but a page should be read on a phone
_TIMEOUT_GRACE_S = 5.0  # past Apprise's own deadline, in case a plugin ignores it
_REASON_CHARS = 500
NO_INPUT_NOTE = "contact methods only send: there is no input to watch"

quiet_apprise()


def contact_capabilities(*, min_interval_s: float = 2.0, global_per_second: float = 5.0) -> Capabilities:
    """Plain text, no buttons or edits, and rates that mail servers and webhooks tolerate."""
    return Capabilities(
        platform=CONTACT_PLATFORM,
        formatting=Formatting.PLAIN,
        max_message_length=MAX_MESSAGE_CHARS,
        buttons=False,
        max_button_data_bytes=0,
        replies=False,
        edits=False,  # an email cannot be changed once sent: the outbox marks edits done without a call
        files=True,  # sent as the text of the message (see send_file)
        max_file_bytes=64 * 1024,
        rate_limits=RateLimits(
            per_chat_interval_s=min_interval_s,
            per_group_per_minute=None,
            group_chat_prefix="",
            global_per_second=global_per_second,
            edit_interval_s=min_interval_s,
        ),
    )


class ContactGateway:
    """Sends outbox rows to contact methods through Apprise. Has no input: `start` and `stop` only mark time."""

    def __init__(
        self,
        contacts: Mapping[str, SecretStr],
        *,
        clock: Callable[[], datetime],
        notify_timeout_s: float = 30.0,
        min_interval_s: float = 2.0,
        global_per_second: float = 5.0,
    ) -> None:
        self._contacts = dict(contacts)
        self._timeout_s = notify_timeout_s
        self._capabilities = contact_capabilities(min_interval_s=min_interval_s, global_per_second=global_per_second)
        self._services: dict[str, apprise.Apprise] = {}
        self._input = InputWatch(CONTACT_PLATFORM, clock=clock, mode="none", watched=False, note=NO_INPUT_NOTE)

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    @property
    def input_watch(self) -> InputWatch:
        return self._input

    @property
    def keys(self) -> list[str]:
        """The configured contact keys, in config order."""
        return list(self._contacts)

    async def start(self, on_event: EventHandler) -> None:
        self._input.started()

    async def stop(self) -> None:
        self._services.clear()

    async def send(self, chat_id: str, message: Rendered, *, reply_to: str | None = None) -> str:
        title, _, rest = message.plain.partition("\n")
        await self._notify(chat_id, title=title, body=rest.strip() or title)
        # Apprise returns no id of what it sent: a unique one lets an edit or a reply name this message anyway.
        return f"{chat_id}#{secrets.token_hex(6)}"

    async def edit(self, chat_id: str, message_id: str, message: Rendered) -> None:
        """Nothing to do: a sent email or push cannot be changed, and a new one per edit would flood the person
        (`capabilities.edits` is False, so the outbox does not even call this)."""

    async def send_file(
        self,
        chat_id: str,
        filename: str,
        content: bytes,
        *,
        caption: Rendered | None = None,
        reply_to: str | None = None,
    ) -> str:
        """The file's text goes as the body (no attachments: SMS and push gateways take none)."""
        title = caption.plain.partition("\n")[0] if caption is not None else filename
        body = content.decode("utf-8", errors="replace")[:MAX_MESSAGE_CHARS] or filename
        await self._notify(chat_id, title=title or filename, body=body)
        return f"{chat_id}#{secrets.token_hex(6)}"

    async def answer_button(self, callback_id: str, text: str) -> None:
        return None  # no buttons

    async def leave(self, chat_id: str) -> bool:
        return False  # nothing to leave: a contact removed from the config is simply never sent to again

    async def probe(self) -> str | None:
        # A mail server or webhook cannot be asked without sending something; each delivery's result is what tells
        # (a failed page is on its incident's timeline), so the self-test has nothing to check here.
        return None

    # -- internals -------------------------------------------------------------------------------

    def _service(self, key: str) -> tuple[apprise.Apprise, str]:
        url = self._contacts.get(key)
        if url is None:
            raise DeliveryRefused(
                f"contact {key} is not configured (any more); add it under users[].contacts or oncall.contacts, "
                "or ignore this message if it was removed on purpose"
            )
        raw = url.get_secret_value()
        service = self._services.get(key)
        if service is None:
            service = apprise.Apprise()
            if not service.add(raw):  # checked at load time: only a plugin changed since could refuse it now
                raise DeliveryRefused(
                    f"contact {key}: Apprise cannot use its {scheme_of(raw)}:// URL; fix it (docs/contact-methods.md)"
                )
            self._services[key] = service
        return service, raw

    async def _notify(self, key: str, *, title: str, body: str) -> None:
        service, url = self._service(key)
        scheme = scheme_of(url)
        try:
            async with asyncio.timeout(self._timeout_s + _TIMEOUT_GRACE_S):
                result = await service.async_notify(
                    body=body,
                    title=title,
                    body_format=apprise.NotifyFormat.TEXT,  # alert text is untrusted: never read as HTML/Markdown
                    timeout=self._timeout_s,
                )
        except TimeoutError as exc:
            raise RetryLater(f"contact {key} ({scheme}://): no answer within {self._timeout_s:g}s") from exc
        except Exception as exc:  # a plugin bug must not lose the page: it is retried like a network error
            raise RetryLater(f"contact {key} ({scheme}://): {type(exc).__name__}") from exc
        if not result:
            raise RetryLater(f"contact {key} ({scheme}://) failed: {_reason(result, url)}")


def _reason(result: Any, url: str) -> str:
    """What Apprise logged during the call (warnings and errors), without the URL's secrets."""
    lines: list[str] = []
    for entry in result.logs():
        message = str(getattr(entry, "message", entry)).strip()
        if message and message not in lines:
            lines.append(message)
    status = getattr(getattr(result, "status", None), "name", "FAILURE")
    said = "; ".join(lines) or f"Apprise reported {status} and logged no reason"
    return scrub_secrets(said, url)[:_REASON_CHARS]
