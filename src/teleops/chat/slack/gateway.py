"""The Slack gateway: Web API calls through slack-sdk's AsyncWebClient, inbound events through slack-bolt's
AsyncApp, over Socket Mode (default: no public URL) or the HTTP Events API (`handle_http`).

Bolt routes and acknowledges (events at once; buttons and `/teleops` within its 3 s window, before our
work runs); this module only translates. Signatures are verified here, before Bolt sees the body, with
the controller's clock (docs/threat-model.md T02/T03), so Bolt's own system-clock check is switched off.
Replays are de-duplicated by the conversation on `event_id` / `trigger_id` (the chat_updates table).

Nothing Slack sends can stop input: a payload that cannot be read or handled, in either mode, is acknowledged
(answered 200 / acked over the socket, so Slack does not redeliver it) and reported to `input_watch` — logged at
warning, audited, counted. The frame-level checks of Socket Mode live in `socket_mode.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime
from typing import Any, NoReturn

import structlog
from aiohttp import ClientError
from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from teleops.chat.base import (
    Capabilities,
    DeliveryRefused,
    EventHandler,
    Formatting,
    InboundEvent,
    MarkupRejected,
    RateLimits,
    Rendered,
    RetryLater,
    TokenRejected,
)
from teleops.chat.input_watch import InputWatch, UnhandledReason
from teleops.chat.slack.events import PLATFORM, button_event, command_event, delivery_id, message_event, team_of
from teleops.chat.slack.signature import RequestSignature
from teleops.chat.slack.socket_mode import SocketModeHandler
from teleops.store.database import StorageUnavailable
from teleops.store.leases import Lease, LeaseStore

__all__ = ["SLACK_CAPABILITIES", "SOCKET", "HttpAnswer", "SlackGateway"]

log = structlog.get_logger(__name__)

SOCKET = "slack-socket"  # the singleton lease of Socket Mode
STANDBY_NOTE = "standby: another replica holds the slack-socket lease and its session (see /readyz singletons)"

SLACK_CAPABILITIES = Capabilities(
    platform=PLATFORM,
    formatting=Formatting.SLACK_MRKDWN,
    max_message_length=2900,  # one Block Kit section holds 3000 characters; the rest is room for markup
    buttons=True,
    max_button_data_bytes=2000,  # a button's `value`
    replies=True,
    edits=True,
    files=True,
    max_file_bytes=1024 * 1024 * 1024,
    rate_limits=RateLimits(
        per_chat_interval_s=1.0,  # chat.postMessage: about one message per second per channel
        per_group_per_minute=None,
        group_chat_prefix="",
        global_per_second=10.0,
        edit_interval_s=1.2,  # chat.update is Tier 3 (~50/min): one message is edited at most that often
    ),
    threads=True,
)

SLASH_COMMAND = "/teleops"
# Errors that mean our blocks/markup were refused: resend as plain text (the outbox does that).
_MARKUP_ERRORS = {"invalid_blocks", "invalid_blocks_format", "invalid_attachments", "msg_blocks_too_long"}
# Errors that a later attempt may get past (Slack's side, or our token while an admin fixes it).
_TEMPORARY_ERRORS = {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
_CONFIG_ERRORS = {"invalid_auth", "not_authed", "token_expired", "token_revoked", "account_inactive"}

HttpAnswer = tuple[int, dict[str, str], bytes]
# Said in /readyz: with the Events API Slack pushes, so a quiet workspace and a broken endpoint look alike from here.
EVENTS_NOTE = (
    "events mode: Slack pushes events over HTTP, so a stall cannot be told from quiet here; "
    "Slack emails the app's owners when deliveries fail, or use socket mode"
)


def silence_sdk_loggers() -> None:
    """slack-sdk logs request arguments (tokens, message text) at DEBUG: keep it above (docs/threat-model.md T24)."""
    for name in ("slack_sdk", "slack_bolt"):
        logging.getLogger(name).setLevel(logging.WARNING)


class SlackGateway:
    """A `Gateway` for Slack. `mode` is "socket" (Socket Mode, needs `app_token`) or "events" (`handle_http`)."""

    def __init__(
        self,
        bot_token: str,
        *,
        allowed_channels: Collection[str],
        clock: Callable[[], datetime],
        mode: str = "socket",
        app_token: str | None = None,
        signing_secret: str | None = None,
        base_url: str | None = None,
        team_id: str | None = None,
        request_timeout_s: int = 8,
        leases: LeaseStore | None = None,
    ) -> None:
        silence_sdk_loggers()
        self._allowed = frozenset(allowed_channels)
        self._clock = clock
        self._mode = mode
        self._app_token = app_token
        self._team_id = team_id
        self._signature = RequestSignature(signing_secret, clock=clock) if signing_secret else None
        kwargs: dict[str, Any] = {"base_url": base_url} if base_url else {}
        # No retry handlers: a 429 or 5xx goes back to the outbox, which owns retries (and Retry-After).
        self._client = AsyncWebClient(token=bot_token, timeout=request_timeout_s, retry_handlers=[], **kwargs)
        self._app = AsyncApp(
            client=self._client,
            token=bot_token,
            signing_secret=signing_secret or "unused-in-socket-mode",
            request_verification_enabled=False,  # verified in `handle_http` with the injected clock
            process_before_response=False,
            logger=logging.getLogger("slack_bolt.teleops"),
        )
        self._register(self._app)
        self._on_event: EventHandler | None = None
        self._socket: SocketModeHandler | None = None
        self._connector: asyncio.Task[None] | None = None
        # Several replicas (issue #23): with `leases`, the Socket Mode session is the "slack-socket" singleton, opened
        # by `socket_while_held` in the replica holding it; each envelope is fenced before it is handled.
        self._leases = leases
        self._lease: Lease | None = None
        self._bot_user_id: str | None = None
        self._thread_of: dict[str, str] = {}  # ts of a message we posted in a thread -> the thread's ts
        socket = mode == "socket"
        # Socket mode: a frame, or an open session when asked, is a successful receive cycle.
        self._input = InputWatch(
            PLATFORM,
            clock=clock,
            mode=mode,
            watched=socket,
            note="" if socket else EVENTS_NOTE,
            probe=self.connected if socket else None,
        )

    @property
    def capabilities(self) -> Capabilities:
        return SLACK_CAPABILITIES

    @property
    def input_watch(self) -> InputWatch:
        return self._input

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self, on_event: EventHandler) -> None:
        """Learn who the bot is (auth.test) and, in socket mode, connect in the background (with retries).

        Slack being unreachable is logged, not raised: the outbox keeps messages until it answers.
        """
        self._on_event = on_event
        if self.socket_as_singleton:
            self._input.standing_by(STANDBY_NOTE)  # until `socket_while_held` runs here
        else:
            self._input.started()
        if self._mode == "socket":
            if not self._app_token:
                log.error("slack.no_app_token", hint="set slack.app_token (xapp-…) or slack.mode: events")
                return
            if self._leases is None:
                self._connector = asyncio.create_task(self._connect(), name="slack-socket-mode")
        else:
            await self._whoami_or_log("start")

    async def stop(self) -> None:
        if self._connector is not None:
            self._connector.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._connector
            self._connector = None
        if self._socket is not None:
            with contextlib.suppress(Exception):
                await self._socket.close_async()  # type: ignore[no-untyped-call]
            self._socket = None

    @property
    def socket_as_singleton(self) -> bool:
        """Whether the Socket Mode session waits for the "slack-socket" lease (`socket_while_held`)."""
        return self._mode == "socket" and self._leases is not None and bool(self._app_token)

    async def socket_while_held(self, lease: Lease) -> NoReturn:
        """The singleton body: open the session and keep it until cancelled (the lease lost, or a stop); then close
        it, so Slack sends the envelopes to the new holder's session."""
        self._lease = lease
        self._input.started()
        try:
            await self._connect()
            await asyncio.Event().wait()  # the SDK's session monitor keeps the session; this only waits
        finally:
            self._lease = None
            self._input.standing_by(STANDBY_NOTE)
            if self._socket is not None:
                with contextlib.suppress(Exception):
                    await self._socket.close_async()  # type: ignore[no-untyped-call]
                self._socket = None
        raise AssertionError("the session is held until cancelled")

    async def _holds_socket(self) -> bool:
        """The fence of one envelope: this replica holds the "slack-socket" lease now (by the database clock)."""
        lease, leases = self._lease, self._leases
        if lease is None or leases is None:
            return leases is None  # no leases: alone, always; with leases but none held: never
        try:
            return await leases.check(lease)
        except StorageUnavailable:
            return False

    async def connected(self) -> bool:
        """True while a Socket Mode session is open (always False in events mode)."""
        return self._socket is not None and await self._socket.client.is_connected()

    async def _whoami_or_log(self, during: str) -> None:
        """`_whoami`, where failing only delays knowing our own user id (asked again next time): say so."""
        try:
            await self._whoami()
        except Exception as exc:  # network, HTTP, bad token: all only postpone it
            log.warning("slack.auth_test_failed", during=during, error=_describe(exc), hint="retried on next use")

    async def _whoami(self) -> None:
        if self._bot_user_id is None:
            answer = await self._client.auth_test()
            self._bot_user_id = str(answer.get("user_id") or "") or None
            if self._team_id is None:
                self._team_id = str(answer.get("team_id") or "") or None

    async def _connect(self) -> None:
        failures = 0
        while True:
            try:
                await self._whoami()
                assert self._app_token is not None
                handler = SocketModeHandler(
                    self._app, self._app_token, web_client=self._client, watch=self._input, fence=self._holds_socket
                )
                await handler.connect_async()  # type: ignore[no-untyped-call]
                self._socket = handler
                log.info("slack.socket_mode_connected")
                return  # the SDK's session monitor reconnects from here on
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                delay = min(30.0, 0.5 * 2 ** min(failures, 6))
                log.warning("slack.connect_failed", error=_describe(exc), retry_in_s=delay)
                await asyncio.sleep(delay)

    # -- sending ----------------------------------------------------------------------------------

    async def send(self, chat_id: str, message: Rendered, *, reply_to: str | None = None) -> str:
        thread = self._thread(reply_to)
        answer = await _call(
            self._client.chat_postMessage(
                channel=chat_id,
                text=_fallback_text(message),
                blocks=_blocks(message),
                thread_ts=thread,
                unfurl_links=False,
                unfurl_media=False,
            )
        )
        ts = str(answer.get("ts") or "")
        if not ts:
            raise RetryLater("Slack answered chat.postMessage without a ts")
        if thread is not None:
            self._thread_of[ts] = thread
        return ts

    async def edit(self, chat_id: str, message_id: str, message: Rendered) -> None:
        await _call(
            self._client.chat_update(
                channel=chat_id, ts=message_id, text=_fallback_text(message), blocks=_blocks(message)
            )
        )

    async def send_file(
        self,
        chat_id: str,
        filename: str,
        content: bytes,
        *,
        caption: Rendered | None = None,
        reply_to: str | None = None,
    ) -> str:
        thread = self._thread(reply_to)
        answer = await _call(
            self._client.files_upload_v2(
                channel=chat_id,
                filename=filename,
                content=content,
                title=filename,
                initial_comment=caption.text[:3000] if caption is not None else None,
                thread_ts=thread,
            )
        )
        file = answer.get("file") or {}
        # The message that shares the file, where Slack already says; else the file id (unique, stable).
        shares = (file.get("shares") or {}) if isinstance(file, Mapping) else {}
        for scope in ("public", "private"):
            posts = (shares.get(scope) or {}).get(chat_id) or []
            if posts and posts[0].get("ts"):
                return str(posts[0]["ts"])
        return str(file.get("id") or "") if isinstance(file, Mapping) else ""

    async def answer_button(self, callback_id: str, text: str) -> None:
        channel, _, user = callback_id.partition("|")
        try:
            await self._client.chat_postEphemeral(channel=channel, user=user, text=text[:300])
        except (SlackApiError, SlackClientError, ClientError, TimeoutError) as exc:  # best effort
            log.info("slack.answer_button_failed", error=_describe(exc))

    async def leave(self, chat_id: str) -> bool:
        """Leave a channel (a direct message cannot be left: False). Best effort: a refusal is logged, False."""
        if not chat_id.startswith(("C", "G")):
            return False  # D…: a person's direct message with the app
        try:
            response = await self._client.conversations_leave(channel=chat_id)
        except (SlackApiError, SlackClientError, ClientError, TimeoutError) as exc:
            log.warning("slack.leave_failed", channel=chat_id, error=_describe(exc))
            return False
        return not response.get("not_in_channel", False)  # ok, but it was no member: nothing was left

    async def probe(self) -> str | None:
        """auth.test: Slack answers and takes the bot token (None), or why not (e.g. "invalid_auth")."""
        try:
            await self._client.auth_test()
        except Exception as exc:  # network, HTTP, a refused token: each is a reason for the self-test
            return f"auth.test failed: {_describe(exc)}; check slack.bot_token and that the Slack API is reachable"
        return None

    def _thread(self, reply_to: str | None) -> str | None:
        # Slack threads are one level deep: an answer to a message in a thread goes to that thread.
        if reply_to is None:
            return None
        return self._thread_of.get(reply_to, reply_to)

    # -- receiving --------------------------------------------------------------------------------

    async def handle_http(self, headers: Mapping[str, Sequence[str]], body: bytes) -> HttpAnswer:
        """One Events API / interactivity / slash-command request. 401 (nothing done) unless the
        signature checks out; else Bolt's answer (the URL-verification challenge, or 200 once acknowledged).
        `headers` maps lower-case names to every value received.
        """
        if self._signature is None or not self._signature.valid(headers, body):
            log.warning("slack.signature_refused", retry=_first(headers, "x-slack-retry-num"))
            return 401, {"content-type": "text/plain"}, b"invalid Slack signature"
        try:
            request = AsyncBoltRequest(body=body.decode("utf-8"), headers={k: list(v) for k, v in headers.items()})
        except ValueError as exc:  # not UTF-8, or JSON that does not parse: signed by Slack, unreadable to us
            await self._input.unhandled(update_id="", reason=UnhandledReason.MALFORMED_ENVELOPE, error=exc, raw=body)
            return 200, {"content-type": "text/plain"}, b""  # confirmed: a redelivery could not be read either
        response = await self._app.async_dispatch(request)
        if response.status == 404:
            # No listener for this kind: answered 200 so Slack neither redelivers it nor counts it as a failure.
            await self._input.unhandled(
                update_id=delivery_id(request.body),
                reason=UnhandledReason.UNKNOWN_KIND,
                error="no handler for this request",
                raw=request.body,
            )
            return 200, {"content-type": "text/plain"}, b""
        if response.status >= 500:
            # Bolt's matchers failed on the payload before any listener of ours ran: a retry fails the same way.
            await self._input.unhandled(
                update_id=delivery_id(request.body),
                reason=UnhandledReason.UNPARSEABLE,
                error=f"slack-bolt failed on this request ({response.status}); see the slack_bolt log",
                raw=request.body,
            )
            return 200, {"content-type": "text/plain"}, b""
        content_type = (response.headers.get("content-type") or ["text/plain"])[0]
        return response.status, {"content-type": content_type}, (response.body or "").encode()

    def _register(self, app: AsyncApp) -> None:
        app.event("message")(self._on_message)
        app.event("app_mention")(self._ignore)  # the same text also arrives as a `message` event
        app.event("member_joined_channel")(self._on_joined)
        app.action(re.compile(r"^teleops:"))(self._on_button)
        app.command(SLASH_COMMAND)(self._on_command)

    async def _ignore(self, ack: AsyncAck) -> None:
        await ack()

    async def _on_message(self, body: dict[str, Any], ack: AsyncAck) -> None:
        await ack()
        await self._deliver(body, lambda: message_event(body, now=self._clock()))

    async def _on_button(self, body: dict[str, Any], ack: AsyncAck) -> None:
        await ack()
        await self._deliver(body, lambda: button_event(body, now=self._clock()))

    async def _on_command(self, body: dict[str, Any], ack: AsyncAck) -> None:
        words = str(body.get("text") or "").strip()
        # Slack wants an answer within 3 s; the real one follows in the channel through the outbox.
        await ack(f"`{SLASH_COMMAND} {words}` received." if words else "")
        await self._deliver(body, lambda: command_event(body, now=self._clock()))

    async def _on_joined(self, body: dict[str, Any], ack: AsyncAck) -> None:
        await ack()
        try:
            await self._joined(body)
        except Exception as exc:  # a member_joined_channel in a shape we do not read
            await self._input.unhandled(
                update_id=delivery_id(body), reason=UnhandledReason.UNPARSEABLE, error=exc, raw=body
            )

    async def _joined(self, body: Mapping[str, Any]) -> None:
        event = body.get("event") or {}
        channel = str(event.get("channel") or "")
        await self._whoami_or_log("member_joined_channel")
        if event.get("user") != self._bot_user_id or channel in self._allowed:
            return
        # Invited into a channel nobody configured: leave at once (docs/threat-model.md T06).
        log.warning("slack.left_unknown_channel", channel=channel, inviter=event.get("inviter"))
        await self.leave(channel)

    async def _deliver(self, body: Mapping[str, Any], read: Callable[[], InboundEvent | None]) -> None:
        """Normalise `body` with `read` and hand the event on; what cannot be read or handled is reported."""
        try:
            event = read()
        except Exception as exc:  # acknowledged already; a shape events.py does not read
            await self._input.unhandled(
                update_id=delivery_id(body), reason=UnhandledReason.UNPARSEABLE, error=exc, raw=body
            )
            return
        if event is None or self._on_event is None:
            return
        if self._team_id and not event.user_id.startswith(f"{self._team_id}/"):
            # A person of another workspace (another install, or a channel shared across workspaces):
            # never served, not even /link (docs/threat-model.md T04).
            log.warning("slack.foreign_team_refused", team=team_of(body), user=event.user_id, audit=True)
            return
        try:
            await self._on_event(event)
        except Exception as exc:  # one bad event must not stop the socket
            log.exception("slack.event_failed", update_id=event.update_id)
            await self._input.unhandled(
                update_id=event.update_id, reason=UnhandledReason.HANDLER_FAILED, error=exc, raw=body
            )


async def _call(awaitable: Any) -> Mapping[str, Any]:
    """Await a slack-sdk call and map its errors onto the gateway's DeliveryError family."""
    try:
        response = await awaitable
    except SlackApiError as exc:
        status = int(getattr(exc.response, "status_code", 0) or 0)
        error = str((exc.response.data or {}).get("error", "")) if isinstance(exc.response.data, dict) else ""
        if status == 429 or error == "ratelimited":
            raise RetryLater("Slack rate limit (429)", retry_after=_retry_after(exc)) from exc
        if status >= 500 or error in _TEMPORARY_ERRORS:
            raise RetryLater(f"Slack is unavailable ({status} {error})".strip()) from exc
        if error in _MARKUP_ERRORS:
            raise MarkupRejected(f"Slack refused the blocks: {error}") from exc
        if error in _CONFIG_ERRORS:
            raise TokenRejected(
                f"Slack rejects the bot token ({error}): check slack.bot_token and restart TeleOps"
            ) from exc
        raise DeliveryRefused(f"Slack refused: {error or status}") from exc
    except (SlackClientError, ClientError, TimeoutError, OSError) as exc:
        raise RetryLater(_describe(exc)) from exc
    data = response.data if hasattr(response, "data") else response
    return data if isinstance(data, Mapping) else {}


def _retry_after(exc: SlackApiError) -> float | None:
    headers = getattr(exc.response, "headers", None) or {}
    for key, value in headers.items():
        if str(key).lower() == "retry-after":
            with contextlib.suppress(TypeError, ValueError):
                return max(float(value if isinstance(value, str) else value[0]), 0.0)
    return None


def _fallback_text(message: Rendered) -> str:
    # `text` is what notifications and screen readers show; with blocks it is not displayed in the channel.
    return (message.text or message.plain or " ")[:39000]


def _blocks(message: Rendered) -> list[dict[str, Any]]:
    if message.formatting is Formatting.SLACK_MRKDWN and message.blocks:
        return list(message.blocks)
    # The plain twin (after Slack refused our blocks): one plain-text section, buttons kept without frills.
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "plain_text", "text": (message.plain or " ")[:3000], "emoji": False}}
    ]
    if message.buttons:
        elements = [
            {
                "type": "button",
                "action_id": f"teleops:{b.data.split(':', 1)[0]}:{n}",
                "text": {"type": "plain_text", "text": b.label[:75] or "?"},
                "value": b.data,
            }
            for n, b in enumerate(message.buttons[:25])
        ]
        blocks.append({"type": "actions", "elements": elements})
    return blocks


def _first(headers: Mapping[str, Sequence[str]], name: str) -> str | None:
    values = headers.get(name) or ()
    return values[0] if values else None


def _describe(exc: BaseException) -> str:
    # slack-sdk messages carry the API URL (never the token: it travels in a header); keep them short.
    if isinstance(exc, SlackApiError):
        data = exc.response.data if isinstance(exc.response.data, dict) else {}
        return f"SlackApiError: {getattr(exc.response, 'status_code', '?')} {data.get('error', '')}"
    return f"{type(exc).__name__}: {exc}"[:300]
