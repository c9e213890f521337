"""Secrets masked in command output on the controller before it is stored, logged or sent (docs/threat-model.md T24).

The agent already redacts with its own rules; the controller applies `Settings.redaction_rules()` (built-ins,
configured patterns and values, the chat tokens) again, because an agent may be older, misconfigured or
compromised. Streamed output goes through one `Redactor` per command, so a secret split across two output
messages is still caught; the final output (which the exit message carries whole) is redacted as a whole.
"""

from __future__ import annotations

from teleops.domain.redaction import Redactor, SecretRules, redact

__all__ = ["OutputRedaction"]


class OutputRedaction:
    def __init__(self, rules: SecretRules) -> None:
        self._rules = rules
        self._streams: dict[int, Redactor] = {}

    def chunk(self, command_id: int, text: str) -> str:
        """What of this output chunk is safe to pass on now (a possible secret's start is held back)."""
        stream = self._streams.get(command_id)
        if stream is None:
            stream = self._streams[command_id] = Redactor(self._rules)
        return stream.feed(text)

    def final(self, command_id: int, text: str) -> str:
        """The whole output, redacted; forgets the command's stream (what it held back is in `text` too)."""
        self._streams.pop(command_id, None)
        return redact(text, self._rules)

    def forget(self, command_id: int) -> None:
        self._streams.pop(command_id, None)

    def text(self, text: str) -> str:
        """Any other agent-supplied text (refusal reasons, error messages) before it is stored or logged."""
        return redact(text, self._rules)
