"""Slack request signatures (v0 HMAC-SHA256 over `v0:<timestamp>:<raw body>`), with an injected clock.

docs/threat-model.md T02/T03: the raw bytes are what is signed, so the check runs before anything parses the body;
exactly one `X-Slack-Signature` and one `X-Slack-Request-Timestamp` header; the timestamp within ±300 s
of *our* clock; the comparison is constant-time (slack-sdk's `SignatureVerifier` uses `hmac.compare_digest`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

from slack_sdk.signature import Clock, SignatureVerifier

__all__ = ["MAX_SKEW_S", "RequestSignature"]

MAX_SKEW_S = 300  # Slack's own recommendation; slack-sdk hard-codes the same window


class _Injected(Clock):
    def __init__(self, clock: Callable[[], datetime]) -> None:
        self._clock = clock

    def now(self) -> float:
        return self._clock().timestamp()


class RequestSignature:
    """Verifies that a request came from Slack. `valid` never raises."""

    def __init__(self, signing_secret: str, *, clock: Callable[[], datetime]) -> None:
        self._verifier = SignatureVerifier(signing_secret, clock=_Injected(clock))

    def valid(self, headers: Mapping[str, Sequence[str]], body: bytes) -> bool:
        """True only for one well-formed, fresh, matching `v0=` signature over exactly `body`.

        `headers` maps lower-case names to every value received (a repeated header is refused).
        """
        signatures = headers.get("x-slack-signature", ())
        timestamps = headers.get("x-slack-request-timestamp", ())
        if len(signatures) != 1 or len(timestamps) != 1:
            return False
        timestamp, signature = timestamps[0].strip(), signatures[0].strip()
        if not timestamp.isdigit() or len(timestamp) > 12 or not signature.startswith("v0="):
            return False
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return False
        try:
            return self._verifier.is_valid(body=text, timestamp=timestamp, signature=signature)
        except (ValueError, TypeError):  # defensive: nothing malformed may turn into a 500
            return False
