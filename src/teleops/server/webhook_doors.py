"""The chat webhooks at the front door (server/front_door.py): what Telegram and Slack must show before a body.

Telegram sends a secret header: compared in constant time, so an unauthenticated update costs its headers.

Slack's Events API signs the whole body (`X-Slack-Signature: v0=HMAC-SHA256(v0:timestamp:body)`), so the
signature cannot be checked before the body is in. Its cost is bounded instead:

* before any byte of the body: exactly one `X-Slack-Request-Timestamp` within 5 minutes of our clock (Slack's
  own replay window) and exactly one `X-Slack-Signature` of the form `v0=` + 64 hex digits; anything else is 401;
* the body is capped at `SLACK_BODY_CAP` (128 KiB). Slack documents no maximum request size; a message's text is
  cut at 40,000 characters, and an event carries it twice (`text` and its `rich_text` block), so an ASCII message
  at Slack's limit is about 80 KB with its envelope. A longer (non-ASCII) one is refused 413 and logged;
* at most `SLACK_UNVERIFIED_AT_ONCE` (8) Slack bodies are being read at once; the next is answered 503 with
  `Retry-After: 1` before its body is read (Slack retries a failed delivery three times). At most 8 × 128 KiB =
  1 MiB is therefore held for unverified Slack bodies, however many connections are open.

The default, Socket Mode (`slack.mode: socket`), has no inbound HTTP at all: the route answers 404 at the door.
"""

from __future__ import annotations

import hmac
import re

from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse, Response

from teleops.server.services import Services

__all__ = ["SLACK_BODY_CAP", "SLACK_UNVERIFIED_AT_ONCE", "SlackReads", "admit_slack", "admit_telegram"]

KIB = 1024
SLACK_BODY_CAP = 128 * KIB
SLACK_UNVERIFIED_AT_ONCE = 8
SLACK_MAX_SKEW_S = 300  # as chat/slack/signature.py (MAX_SKEW_S); the signature itself is checked there
_SIGNATURE = re.compile(r"v0=[0-9a-f]{64}")


def admit_telegram(headers: Headers, services: Services) -> Response | None:
    """None when the update may be read; else the answer (404 not in webhook mode, 403 wrong secret)."""
    telegram = services.settings.telegram
    expected = telegram.webhook_secret
    if telegram.mode != "webhook" or expected is None:
        return PlainTextResponse(
            "Telegram webhook mode is not enabled; set telegram.mode: webhook and telegram.webhook_secret",
            status_code=404,
        )
    given = headers.getlist("x-telegram-bot-api-secret-token")
    if len(given) != 1 or not hmac.compare_digest(given[0].encode(), expected.get_secret_value().encode()):
        return PlainTextResponse("missing or wrong X-Telegram-Bot-Api-Secret-Token", status_code=403)
    return None


def admit_slack(headers: Headers, services: Services) -> Response | None:
    """None when the request's signature headers are fresh and well formed; else the answer (404, 401)."""
    if services.settings.slack.mode != "events":
        return PlainTextResponse(
            "Slack Events API mode is not enabled; set slack.mode: events and slack.signing_secret",
            status_code=404,
        )
    signatures = headers.getlist("x-slack-signature")
    timestamps = headers.getlist("x-slack-request-timestamp")
    if len(signatures) != 1 or not _SIGNATURE.fullmatch(signatures[0].strip()):
        return PlainTextResponse(
            "invalid Slack signature: send exactly one X-Slack-Signature of the form v0=<64 hex digits>",
            status_code=401,
        )
    stamp = timestamps[0].strip() if len(timestamps) == 1 else ""
    now = services.clock().timestamp()
    if not (stamp.isdigit() and len(stamp) <= 12 and abs(now - int(stamp)) <= SLACK_MAX_SKEW_S):
        return PlainTextResponse(
            "invalid Slack signature: X-Slack-Request-Timestamp is missing or more than 5 minutes from the "
            "server's clock; check both clocks (NTP)",
            status_code=401,
        )
    return None


class SlackReads:
    """How many Slack bodies are being read before their signature could be checked; at most `limit`."""

    def __init__(self, limit: int = SLACK_UNVERIFIED_AT_ONCE) -> None:
        self.limit = limit
        self.reading = 0

    def enter(self) -> Response | None:
        """None, counting one more body being read; or the 503 to send at once when `limit` are being read."""
        if self.reading >= self.limit:
            return PlainTextResponse(
                f"{self.limit} Slack requests are being received already; retry in a second",
                status_code=503,
                headers={"Retry-After": "1"},
            )
        self.reading += 1
        return None

    def leave(self) -> None:
        self.reading -= 1
