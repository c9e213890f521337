"""The Telegram gateway: Bot API calls through python-telegram-bot, long polling or webhook updates in.

The bot token sits in every Bot API URL, so the loggers that print request URLs (httpx, httpcore,
PTB's own) are held at WARNING (docs/threat-model.md T24); our own logs never carry the base URL either.

Polling reads getUpdates' raw JSON and parses each update on its own: PTB's `Bot.get_updates` parses the whole
batch at once, so one update whose shape the installed PTB does not expect (an older or self-hosted Bot API
server, a field Telegram changed) made every batch fail and the same offset was polled forever — no command,
no ack, while alerts kept going out (issue #19.1). Now such an update is confirmed (the offset moves past it),
logged at warning, audited and counted, and the rest of the batch is handled.

Several replicas (issue #23): polling is a singleton. With `leases` given, `start` does not poll; the singleton
runner calls `poll_while_held(lease)` in the one replica holding the "telegram-poller" lease. Every poller action is
fenced (store/leases.py): the lease is re-checked before each getUpdates and after it returns, and after each
handled update the next offset is recorded in the same statement that checks the lease, so a replica frozen and
resumed after a takeover handles nothing more. A new holder starts from the recorded offset; an update handled but
not yet recorded when its holder died is fetched again and dropped by the inbound replay guard (`chat_updates`,
unique per update id), so each update is handled once across a failover.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import warnings
from collections.abc import Callable, Collection, Sequence
from datetime import datetime, timedelta
from typing import NoReturn

import structlog
from telegram import (
    Bot,
    BotCommand,
    ChatMemberAdministrator,
    ChatMemberMember,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputFile,
    Message,
    ReplyParameters,
    Update,
)
from telegram.constants import ParseMode
from telegram.error import (
    BadRequest,
    ChatMigrated,
    EndPointNotFound,
    Forbidden,
    InvalidToken,
    RetryAfter,
    TelegramError,
)
from telegram.request import HTTPXRequest
from telegram.warnings import PTBUserWarning

from teleops.chat.base import (
    Capabilities,
    DeliveryRefused,
    EventHandler,
    Formatting,
    MarkupRejected,
    RateLimits,
    Rendered,
    RetryLater,
    TokenRejected,
)
from teleops.chat.input_watch import InputWatch, UnhandledReason
from teleops.chat.telegram.events import PLATFORM, event_of_update
from teleops.store.database import StorageUnavailable
from teleops.store.leases import Lease, LeaseLost, LeaseStore

__all__ = ["BOT_COMMANDS", "POLLER", "TELEGRAM_CAPABILITIES", "TelegramGateway", "silence_token_loggers"]

log = structlog.get_logger(__name__)

TELEGRAM_CAPABILITIES = Capabilities(
    platform=PLATFORM,
    formatting=Formatting.HTML,
    max_message_length=4096,
    buttons=True,
    max_button_data_bytes=64,
    replies=True,
    edits=True,
    files=True,
    max_file_bytes=50 * 1024 * 1024,
    rate_limits=RateLimits(
        per_chat_interval_s=1.0,
        per_group_per_minute=20,
        group_chat_prefix="-",
        global_per_second=30.0,
        edit_interval_s=1.0,
    ),
)

BOT_COMMANDS: tuple[tuple[str, str], ...] = (
    ("run", "HOST CMD… run a command on a host"),
    ("incidents", "open incidents"),
    ("hosts", "hosts with an agent"),
    ("ack", "[ID] acknowledge an incident"),
    ("resolve", "[ID] resolve an incident"),
    ("snooze", "[ID] 30m snooze an incident"),
    ("note", "TEXT add a note to the incident"),
    ("cancel", "ID cancel a running command"),
    ("whoami", "your Telegram id and this chat's id"),
    ("link", "CODE link your Telegram account"),
    ("help", "what TeleOps understands"),
)

POLLER = "telegram-poller"  # the singleton lease of polling mode
# A recorded offset older than this is not used: after a week without updates Telegram numbers the next one at
# random, possibly below it (the replay guard still drops what was handled before).
OFFSET_FRESH_FOR = timedelta(days=1)
_FENCE_RETRY_S = 1.0  # the database did not answer a fence: nothing is handled until it does
STANDBY_NOTE = "standby: another replica holds the telegram-poller lease and polls (see /readyz singletons)"

_UPDATES = ["message", "edited_message", "callback_query", "my_chat_member"]
_JOINED = (ChatMemberMember, ChatMemberAdministrator)
# Said in /readyz: in webhook mode Telegram pushes, so a silent webhook and a broken one look alike from here.
WEBHOOK_NOTE = (
    "webhook mode: Telegram pushes updates, so a stall cannot be told from quiet here; "
    "watch getWebhookInfo (pending_update_count, last_error_message) or use polling"
)


def silence_token_loggers() -> None:
    """Keep URL-printing loggers (the URL holds the bot token) quiet below WARNING."""
    for name in ("httpx", "httpcore", "telegram", "telegram.ext", "telegram.request"):
        logging.getLogger(name).setLevel(logging.WARNING)


class TelegramGateway:
    """A `Gateway` for Telegram. `mode` is "polling" (getUpdates) or "webhook" (see `handle_webhook`)."""

    def __init__(
        self,
        token: str,
        *,
        allowed_chats: Collection[int],
        clock: Callable[[], datetime],
        base_url: str | None = None,
        base_file_url: str | None = None,
        mode: str = "polling",
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
        poll_timeout_s: int = 25,
        request_timeout_s: float = 8.0,
        leases: LeaseStore | None = None,
    ) -> None:
        silence_token_loggers()
        self._allowed = {int(c) for c in allowed_chats}
        self._clock = clock
        self._mode = mode
        self._webhook_url = webhook_url
        self._webhook_secret = webhook_secret
        self._poll_timeout_s = poll_timeout_s
        kwargs: dict[str, object] = {}
        if base_url:
            kwargs["base_url"] = base_url
            kwargs["base_file_url"] = base_file_url or base_url.replace("/bot", "/file/bot")
        # Outbound calls time out well under 10 s so a hung API becomes a retry, not a stuck chat (F03).
        request = HTTPXRequest(
            connection_pool_size=64,
            read_timeout=request_timeout_s,
            write_timeout=request_timeout_s,
            connect_timeout=request_timeout_s,
            pool_timeout=request_timeout_s,
        )
        poll_request = HTTPXRequest(connection_pool_size=2, read_timeout=request_timeout_s, connect_timeout=5.0)
        self._bot = Bot(token, request=request, get_updates_request=poll_request, **kwargs)  # type: ignore[arg-type]
        self._request_timeout_s = request_timeout_s
        self._on_event: EventHandler | None = None
        self._poller: asyncio.Task[None] | None = None
        self._leases = leases  # None: this process polls alone, unfenced (a gateway built outside the controller)
        polling = mode == "polling"
        self._input = InputWatch(
            PLATFORM, clock=clock, mode=mode, watched=polling, note="" if polling else WEBHOOK_NOTE
        )
        # getUpdates is called through `do_api_request` to get the raw batch (see the module docstring); PTB warns
        # that `get_updates` exists, which is the point. Only that one warning is silenced.
        warnings.filterwarnings("ignore", message=r"Please use 'Bot\.getUpdates'", category=PTBUserWarning)

    @property
    def capabilities(self) -> Capabilities:
        return TELEGRAM_CAPABILITIES

    @property
    def input_watch(self) -> InputWatch:
        return self._input

    async def start(self, on_event: EventHandler) -> None:
        """Initialise the bot, publish the command list, and start polling (or register the webhook).

        Failing to reach Telegram here is logged, not raised: the controller must start without it and
        the outbox keeps everything until Telegram answers.
        """
        self._on_event = on_event
        if self.polls_as_singleton:
            self._input.standing_by(STANDBY_NOTE)  # until `poll_while_held` runs here
        else:
            self._input.started()
        try:
            await self._bot.initialize()
            await self._bot.set_my_commands([BotCommand(name, text) for name, text in BOT_COMMANDS])
            if self._mode == "webhook" and self._webhook_url:
                await self._bot.set_webhook(
                    self._webhook_url, secret_token=self._webhook_secret, allowed_updates=_UPDATES
                )
            elif self._mode == "polling":
                await self._bot.delete_webhook()
        except TelegramError as exc:
            log.warning("telegram.start_incomplete", error=_describe(exc))
        if self._mode == "polling" and self._leases is None:
            self._poller = asyncio.create_task(self._poll(None), name="telegram-poll")

    @property
    def polls_as_singleton(self) -> bool:
        """Whether polling waits for the "telegram-poller" lease (`poll_while_held`) instead of starting itself."""
        return self._mode == "polling" and self._leases is not None

    async def poll_while_held(self, lease: Lease) -> NoReturn:
        """The singleton body: poll until cancelled; raises LeaseLost when a fenced step finds the lease gone."""
        self._input.started()
        try:
            await self._poll(lease)
        finally:
            self._input.standing_by(STANDBY_NOTE)
        raise AssertionError("the poller never returns")

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None
        with contextlib.suppress(Exception):
            await self._bot.shutdown()

    async def send(self, chat_id: str, message: Rendered, *, reply_to: str | None = None) -> str:
        sent = await _call(
            self._bot.send_message(
                chat_id=int(chat_id),
                text=message.text or " ",
                parse_mode=_parse_mode(message),
                reply_markup=_keyboard(message),
                reply_parameters=_reply(reply_to),
                link_preview_options=None,
            )
        )
        return str(sent.message_id)

    async def edit(self, chat_id: str, message_id: str, message: Rendered) -> None:
        try:
            await _call(
                self._bot.edit_message_text(
                    text=message.text or " ",
                    chat_id=int(chat_id),
                    message_id=int(message_id),
                    parse_mode=_parse_mode(message),
                    reply_markup=_keyboard(message),
                )
            )
        except _NotModified:
            return  # the message already says this: the edit is done

    async def send_file(
        self,
        chat_id: str,
        filename: str,
        content: bytes,
        *,
        caption: Rendered | None = None,
        reply_to: str | None = None,
    ) -> str:
        sent = await _call(
            self._bot.send_document(
                chat_id=int(chat_id),
                document=InputFile(content, filename=filename),
                caption=caption.text[:1024] if caption is not None else None,
                parse_mode=_parse_mode(caption) if caption is not None else None,
                reply_parameters=_reply(reply_to),
            )
        )
        return str(sent.message_id)

    async def answer_button(self, callback_id: str, text: str) -> None:
        try:
            await self._bot.answer_callback_query(callback_id, text=text[:200])
        except TelegramError as exc:  # best effort: the spinner stops by itself after a while
            log.info("telegram.answer_button_failed", error=_describe(exc))

    async def leave(self, chat_id: str) -> bool:
        """Leave a group or channel (a private chat with a person cannot be left: False)."""
        try:
            number = int(chat_id)
        except ValueError:
            return False
        if number > 0:
            return False  # a person's private chat
        try:
            return bool(await self._bot.leave_chat(number))
        except TelegramError as exc:  # already removed, or the chat is gone: nothing to leave
            log.info("telegram.leave_failed", chat_id=chat_id, error=_describe(exc))
            return False

    async def probe(self) -> str | None:
        """getMe: Telegram answers and takes the bot token (None), or why not (a revoked token is "InvalidToken")."""
        try:
            await self._bot.get_me()
        except TelegramError as exc:
            return f"getMe failed: {_describe(exc)}; check telegram.token and that the Bot API is reachable"
        except Exception as exc:  # the self-test must get a reason, whatever PTB raised
            return f"getMe failed: {_describe(exc)}"
        return None

    async def handle_webhook(self, secret_headers: Sequence[str], body: bytes) -> int:
        """One webhook delivery. Returns the HTTP status: 403 on a missing, wrong or repeated secret header
        (constant-time compare), 400 on a body that is not an update, else 200 once handled.
        """
        expected = self._webhook_secret
        if not expected or len(secret_headers) != 1:
            return 403
        if not hmac.compare_digest(secret_headers[0].encode(), expected.encode()):
            return 403
        try:
            data = json.loads(body)
        except ValueError:
            return 400
        if not isinstance(data, dict):
            return 400
        # A JSON object is an update as far as Telegram is concerned: one we cannot read is answered 200 (and
        # reported), or Telegram would redeliver it and hold back every update behind it.
        await self._take(data)
        return 200

    async def _poll(self, lease: Lease | None) -> None:
        offset = self._first_offset(lease)
        if lease is not None:
            log.info("telegram.polling", epoch=lease.epoch, offset=offset, taken_from=lease.taken_from)
        failures = 0
        while True:
            await self._fence(lease, offset)  # a replica that lost the lease asks Telegram for nothing more
            try:
                batch = await self._get_updates(offset)
                failures = 0
            except asyncio.CancelledError:
                raise
            except RetryAfter as exc:
                await asyncio.sleep(_seconds(exc.retry_after))
                continue
            except (InvalidToken, EndPointNotFound) as exc:  # 401/404 on getUpdates: the token itself is refused
                failures += 1
                delay = min(60.0, 0.5 * 2 ** min(failures, 7))
                log.error("telegram.token_rejected", error=_describe(exc), retry_in_s=delay)
                self._input.credentials_rejected(
                    f"Telegram rejects the bot token ({exc.message}): check telegram.token"
                )
                await asyncio.sleep(delay)
                continue
            except Exception as exc:  # network down, 5xx, conflict, not a list: back off and poll again
                failures += 1
                delay = min(30.0, 0.5 * 2 ** min(failures, 6))
                log.info("telegram.poll_failed", error=_describe(exc), retry_in_s=delay)
                await asyncio.sleep(delay)
                continue
            await self._fence(lease, None)  # the poll may have outlived the lease (a long poll, a SIGSTOP)
            self._input.received()
            for raw in batch:
                update_id = _update_id_of(raw)
                if update_id is not None:
                    # Confirmed on the next getUpdates whatever happens to it below: nothing blocks the queue.
                    offset = max(offset or 0, update_id + 1)
                await self._take(raw)
                if update_id is not None:
                    await self._fence(lease, offset)  # recorded, and the fence of the next update

    def _first_offset(self, lease: Lease | None) -> int | None:
        """Where a new holder starts: the offset its predecessor recorded, when recent (None: Telegram's oldest
        unconfirmed update)."""
        if lease is None or lease.position is None or lease.position_at is None:
            return None
        return lease.position if self._clock() - lease.position_at < OFFSET_FRESH_FOR else None

    async def _fence(self, lease: Lease | None, offset: int | None) -> None:
        """Check the lease (recording `offset` in the same statement when given); raises LeaseLost. While the
        database does not answer, wait: nothing is polled or handled unfenced."""
        if lease is None or self._leases is None:
            return
        while True:
            try:
                if offset is not None:
                    await self._leases.advance(lease, offset)
                elif not await self._leases.check(lease):
                    raise LeaseLost(f"lease {lease.name!r} epoch {lease.epoch} is no longer ours")
                return
            except StorageUnavailable as exc:
                log.warning("telegram.fence_unavailable", error=str(exc), retry_in_s=_FENCE_RETRY_S)
                await asyncio.sleep(_FENCE_RETRY_S)

    async def _get_updates(self, offset: int | None) -> list[object]:
        """One long poll; the updates as raw JSON. Raises TelegramError (network, API) or ValueError (not a list)."""
        batch = await self._bot.do_api_request(
            "getUpdates",
            api_kwargs={"offset": offset, "timeout": self._poll_timeout_s, "allowed_updates": _UPDATES},
            read_timeout=self._request_timeout_s + self._poll_timeout_s,
        )
        if not isinstance(batch, list):
            raise ValueError(f"getUpdates answered {type(batch).__name__}, not a list of updates")
        return batch

    async def _take(self, raw: object) -> None:
        """Parse and handle one raw update; one that cannot be read or handled is reported and skipped."""
        update_id = _update_id_of(raw)
        try:
            if not isinstance(raw, dict):
                raise TypeError(f"an update is a JSON object, got {type(raw).__name__}")
            update = Update.de_json(raw, self._bot)
        except Exception as exc:  # whatever PTB raises on a shape it does not know (TypeError, KeyError, …)
            await self._input.unhandled(update_id=update_id, reason=UnhandledReason.UNPARSEABLE, error=exc, raw=raw)
            return
        if update is not None:
            await self._handle(update, raw)

    async def _handle(self, update: Update, raw: object) -> None:
        try:
            if update.my_chat_member is not None:
                await self._on_membership(update)
                return
            event = event_of_update(update, now=self._clock())
        except Exception as exc:  # parsed by PTB, but not in a shape our reading of it expects
            await self._input.unhandled(
                update_id=update.update_id, reason=UnhandledReason.UNPARSEABLE, error=exc, raw=raw
            )
            return
        if event is None or self._on_event is None:
            return
        try:
            await self._on_event(event)
        except Exception as exc:  # one bad update must not stop the poller
            log.exception("telegram.event_failed", update_id=update.update_id)
            await self._input.unhandled(
                update_id=update.update_id, reason=UnhandledReason.HANDLER_FAILED, error=exc, raw=raw
            )

    async def _on_membership(self, update: Update) -> None:
        change = update.my_chat_member
        assert change is not None
        chat_id = change.chat.id
        if isinstance(change.new_chat_member, _JOINED) and chat_id not in self._allowed:
            # Added to a chat nobody configured: leave at once (docs/threat-model.md T06).
            log.warning("telegram.left_unknown_chat", chat_id=chat_id, added_by=change.from_user.id)
            try:
                await self._bot.leave_chat(chat_id)
            except TelegramError as exc:
                log.warning("telegram.leave_failed", chat_id=chat_id, error=_describe(exc))


class _NotModified(Exception):
    pass


def _update_id_of(raw: object) -> int | None:
    """The `update_id` of a raw update, when it has a usable one."""
    value = raw.get("update_id") if isinstance(raw, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


async def _call(awaitable: object) -> Message:
    """Await a PTB call and map its errors onto the gateway's DeliveryError family."""
    try:
        result = await awaitable  # type: ignore[misc]
    except RetryAfter as exc:
        raise RetryLater("Telegram flood control (429)", retry_after=_seconds(exc.retry_after)) from exc
    except BadRequest as exc:
        text = exc.message.lower()
        if "can't parse entities" in text or "can't find end of" in text or "unsupported start tag" in text:
            raise MarkupRejected(exc.message) from exc
        if "message is not modified" in text:
            raise _NotModified() from exc
        raise DeliveryRefused(f"Telegram refused: {exc.message}") from exc
    except Forbidden as exc:
        raise DeliveryRefused(f"Telegram forbids it (bot removed or blocked?): {exc.message}") from exc
    except InvalidToken as exc:  # 401/404 on the bot token itself: every call will fail the same way
        raise TokenRejected(
            f"Telegram rejects the bot token ({exc.message}): check telegram.token and restart TeleOps"
        ) from exc
    except ChatMigrated as exc:
        raise DeliveryRefused(
            f"the group became a supergroup with id {exc.new_chat_id}: put that id in the config "
            "(telegram.alert_chats / oncall.chats) in place of the old one"
        ) from exc
    except TelegramError as exc:  # NetworkError, TimedOut, 5xx: temporary for us
        raise RetryLater(_describe(exc)) from exc
    if not isinstance(result, Message):
        raise RetryLater("Telegram answered without a message")
    return result


def _seconds(value: int | timedelta) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def _describe(exc: BaseException) -> str:
    # PTB messages never include the URL; keep it that way by using only the class and message.
    return f"{type(exc).__name__}: {exc}"[:300]


def _parse_mode(message: Rendered) -> str | None:
    return ParseMode.HTML if message.formatting is Formatting.HTML else None


def _keyboard(message: Rendered) -> InlineKeyboardMarkup | None:
    if not message.buttons:
        return None
    row = [InlineKeyboardButton(b.label, callback_data=b.data) for b in message.buttons]
    return InlineKeyboardMarkup([row])


def _reply(reply_to: str | None) -> ReplyParameters | None:
    if reply_to is None:
        return None
    # allow_sending_without_reply: the original may have been deleted; the answer still matters.
    return ReplyParameters(message_id=int(reply_to), allow_sending_without_reply=True)
