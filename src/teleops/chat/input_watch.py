"""Whether a chat gateway still hears people: what it could not handle, and when its input last worked.

Every gateway owns one `InputWatch` (`Gateway.input_watch`) and tells it two things:

- `received()`: a receive cycle succeeded — a getUpdates that returned, a live Socket Mode session. Idle input
  (polls that return nothing) is healthy: this watches the channel, not the traffic.
- `unhandled(...)`: one update, event or message could not be parsed or handled. The gateway has already skipped
  past it (confirmed it to the platform, so it is not delivered again and does not block the ones behind it);
  the watch logs it at warning with its id and hands it to its sinks (the chat service counts and audits it).

`health(now, stall_after)` says whether input has stalled: no successful receive cycle for longer than
`stall_after`. A gateway whose input cannot be watched that way (webhooks, the Events API: the platform pushes,
so silence and breakage look the same from here) is `watched=False` and says why in `note`, rather than faking it.
An input that is a singleton among replicas (issue #23) is not watched in a replica that stands by for it
(`standing_by`): silence there is expected; `started()` watches it again once this replica runs it.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog

__all__ = [
    "EXCERPT_CHARS",
    "InputHealth",
    "InputWatch",
    "UnhandledInput",
    "UnhandledReason",
    "UnhandledSink",
    "describe_error",
    "excerpt_of",
]

log = structlog.get_logger(__name__)

EXCERPT_CHARS = 500  # of the raw payload kept with an unhandled update: enough to recognise its shape, no more
_ERROR_CHARS = 300


class UnhandledReason(enum.StrEnum):
    """Why an inbound delivery was skipped (the `reason` label of `teleops_chat_updates_unhandled_total`)."""

    UNPARSEABLE = "unparseable"  # the SDK or our normaliser could not read the update/event
    MALFORMED_ENVELOPE = "malformed_envelope"  # the transport frame itself is not what the platform documents
    UNKNOWN_KIND = "unknown_kind"  # well formed, but of a kind nothing here handles (confirmed, not redelivered)
    HANDLER_FAILED = "handler_failed"  # read fine, but handling it raised


@dataclass(frozen=True, slots=True)
class UnhandledInput:
    """One skipped delivery. `update_id` is the platform's id of it ("" when none could be read)."""

    platform: str
    update_id: str
    reason: UnhandledReason
    error: str  # exception class and message, capped
    excerpt: str  # the first EXCERPT_CHARS characters of the raw payload, as JSON where it was JSON


UnhandledSink = Callable[[UnhandledInput], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class InputHealth:
    """A gateway's input as of `now`. `silent_s`: seconds since the last successful receive cycle (or since the
    gateway started, if none yet); `stalled` only ever for a watched gateway."""

    platform: str
    mode: str
    watched: bool
    last_input_at: datetime | None
    silent_s: float
    stalled: bool
    stall_after_s: float
    note: str = ""

    def problem(self) -> str | None:
        """What to tell a person when input has stalled (None when it has not)."""
        if not self.stalled:
            return None
        heard = (
            "never since start" if self.last_input_at is None else f"last at {self.last_input_at:%Y-%m-%d %H:%M:%S} UTC"
        )
        return (
            f"{self.platform} input stalled: no successful receive ({self.mode}) for {_minutes(self.silent_s)} "
            f"(threshold {_minutes(self.stall_after_s)}; {heard}). Commands and acks sent there are not reaching "
            f"TeleOps; check the controller log for {self.platform}.* warnings and the platform's status."
        )


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


_SECRET_KEY = re.compile(r"token|secret|password", re.IGNORECASE)
_SECRET_TEXT = re.compile(r'("[^"]*(?:token|secret|password)[^"]*"\s*:\s*)"[^"]*"', re.IGNORECASE)


def excerpt_of(raw: object) -> str:
    """A short, printable excerpt of a raw payload (JSON where it is JSON), for logs and the audit record.

    Values under keys that name a token, secret or password (Slack payloads carry the legacy verification
    `token`) are replaced by "[redacted]" first (docs/threat-model.md T24).
    """
    if isinstance(raw, bytes | str):
        text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
        try:
            raw = json.loads(text)
        except ValueError:
            return _SECRET_TEXT.sub(r'\1"[redacted]"', text[: EXCERPT_CHARS * 4])[:EXCERPT_CHARS]
    try:
        text = json.dumps(_redacted(raw), ensure_ascii=False, default=repr, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError):
        text = repr(raw)
    return text[:EXCERPT_CHARS]


def _redacted(value: object, depth: int = 0) -> object:
    if depth > 20:
        return "…"
    if isinstance(value, dict):
        return {
            k: "[redacted]" if isinstance(k, str) and _SECRET_KEY.search(k) else _redacted(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_redacted(v, depth + 1) for v in value]
    return value


def describe_error(error: BaseException | str) -> str:
    """`Class: message` of an exception (or the text given), capped."""
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    return text[:_ERROR_CHARS]


class InputWatch:
    """One gateway's input health. `probe`, when given, is asked on each `refresh` whether input works right now
    (e.g. "is the Socket Mode session open?"); a True answer counts as a successful receive cycle."""

    def __init__(
        self,
        platform: str,
        *,
        clock: Callable[[], datetime],
        mode: str,
        watched: bool = True,
        note: str = "",
        probe: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        self.platform = platform
        self.mode = mode
        self.watched = watched
        self.note = note
        self._clock = clock
        self._probe = probe
        self._since = clock()
        self._last: datetime | None = None
        self._standby: str | None = None  # why another replica receives this input, while it does
        self._sinks: list[UnhandledSink] = []
        self._credential_sinks: list[Callable[[str], None]] = []

    def started(self) -> None:
        """The gateway (re)started receiving: the stall clock counts from now until the first receive."""
        self._since = self._clock()
        self._standby = None

    def standing_by(self, note: str) -> None:
        """Another replica receives this input now (it holds the singleton lease): not watched here, with `note`
        saying so, until `started()`."""
        self._standby = note

    def received(self) -> None:
        """A receive cycle succeeded (even one that brought nothing)."""
        self._last = self._clock()

    def on_credentials_rejected(self, sink: Callable[[str], None]) -> None:
        """`sink(reason)` runs when the platform rejects our token on the input side (a poll answered 401)."""
        self._credential_sinks.append(sink)

    def credentials_rejected(self, reason: str) -> None:
        for sink in self._credential_sinks:
            sink(reason)

    def subscribe(self, sink: UnhandledSink) -> None:
        """Call `sink` with every unhandled delivery (after it is logged). A sink that raises is logged, not fatal."""
        self._sinks.append(sink)

    async def refresh(self) -> None:
        """Ask the probe (if any) whether input works now."""
        if self._probe is None:
            return
        try:
            alive = await self._probe()
        except Exception as exc:  # a probe that fails says "not alive", nothing more
            log.info("chat.input_probe_failed", platform=self.platform, error=describe_error(exc))
            return
        if alive:
            self.received()

    def health(self, *, stall_after: timedelta) -> InputHealth:
        now = self._clock()
        silent = max((now - (self._last or self._since)).total_seconds(), 0.0)
        watched = self.watched and self._standby is None
        return InputHealth(
            platform=self.platform,
            mode=self.mode,
            watched=watched,
            last_input_at=self._last,
            silent_s=silent,
            stalled=watched and silent > stall_after.total_seconds(),
            stall_after_s=stall_after.total_seconds(),
            note=self._standby if self._standby is not None else self.note,
        )

    async def unhandled(
        self, *, update_id: object, reason: UnhandledReason, error: BaseException | str, raw: object = None
    ) -> UnhandledInput:
        """Report one delivery the gateway skipped past. Never raises."""
        item = UnhandledInput(
            platform=self.platform,
            update_id="" if update_id is None else str(update_id)[:128],
            reason=reason,
            error=describe_error(error),
            excerpt=excerpt_of(raw) if raw is not None else "",
        )
        log.warning(
            "chat.update_unhandled",
            platform=item.platform,
            update_id=item.update_id,
            reason=item.reason.value,
            error=item.error,
            excerpt=item.excerpt,
            hint="skipped and confirmed to the platform so later updates still arrive; if this repeats, the "
            "platform sends a shape this TeleOps/SDK version does not read: upgrade or report it with the excerpt",
        )
        for sink in list(self._sinks):
            try:
                await sink(item)
            except Exception:
                log.exception("chat.unhandled_sink_failed", platform=item.platform, update_id=item.update_id)
        return item
