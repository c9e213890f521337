"""Masking secrets in command output before it is stored, logged or sent (docs/threat-model.md T24). Pure; stdlib only.

What is masked:

- built-in shapes: PEM private keys (also unterminated), AWS access key ids and secret keys, `Bearer …`,
  `password=…` / `passwd: …` / `secret=…` / `token=…` / `api_key=…` values, credentials in URLs
  (`scheme://user:PASS@host`), Slack (`xox?-…`, `xapp-…`), Telegram bot and GitHub token shapes, and TeleOps'
  own tokens (`tlo_in_…`, `tlo_ag_…`, `tlo_api_…`: store/tokens.py mints them);
- configured regular expressions (a named group `secret` masks only that group, else the whole match);
- TeleOps tokens also base64- (standard and URL-safe, any alignment) and hex-encoded: the encoded kind prefix
  followed by the rest of the encoded run is masked (a percent-encoded or JSON-escaped token is the token itself);
- configured known secret values, in their exact, base64 (standard and URL-safe, at any alignment inside a
  larger base64 text), hex (lower and upper case), URL-encoded and JSON-escaped forms.

Not masked (there is nothing to recognise): an encoding of a *pattern*-shaped secret other than the shapes
above, other encodings of anything (gzip, rot13, a secret printed one character per line …), and a secret
shorter than 4 characters given as a known value.

`Redactor` does the same on a stream: it holds back a tail window long enough for the longest secret, and
anything a pattern is still matching at the end of what arrived, so a secret split across chunks is masked too.
"""

from __future__ import annotations

import base64
import json
import re
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["BUILTIN_PATTERNS", "MASK", "TELEOPS_TOKEN_PREFIXES", "Redactor", "SecretRules", "encodings_of", "redact"]

MASK = "[REDACTED]"
# Regex secrets are assumed shorter than this; the stream holds back at least this much.
MIN_WINDOW = 256
# A match still growing at this size is masked and emitted rather than held forever.
MAX_HOLD = 64 * 1024
# Characters already passed on that stay in the buffer, so lookbehinds (`://` before URL credentials) still see them.
CONTEXT = 32

_KEY_VALUE = r"(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|client[_-]?secret)"
BUILTIN_PATTERNS: tuple[str, ...] = (
    r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----[\s\S]*?(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----|\Z)",
    r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{16}\b",
    r"(?i)aws_?secret_?access_?key[\"']?\s*[:=]\s*[\"']?(?P<secret>[A-Za-z0-9/+=]{40})",
    r"(?i)\bbearer\s+(?P<secret>[A-Za-z0-9\-._~+/]+=*)",
    rf"(?i)\b[A-Za-z0-9_]*{_KEY_VALUE}[\"']?\s*[=:]\s*(?P<secret>\"[^\"\n]*\"|'[^'\n]*'|[^\s&;,\"']+)",
    r"(?<=://)[^/\s:@]+:(?P<secret>[^/\s@]+)(?=@)",
    r"\bxox[abposre]-[A-Za-z0-9-]{10,}",
    r"\bxapp-[A-Za-z0-9-]{10,}",
    r"\b\d{6,12}:AA[A-Za-z0-9_-]{30,40}\b",
    r"\bgh[pousr]_[A-Za-z0-9]{36,255}\b",
    r"\bgithub_pat_[A-Za-z0-9_]{22,255}\b",
    # TeleOps tokens: a kind prefix + token_urlsafe(32) (43 characters). No leading \b: `x=tlo_…` and `"tlo_…`
    # must match, and `_` is a word character, so `\b` would miss `TOKEN_tlo_…`; 16+ characters keep prose out.
    r"tlo_(?:in|ag|api)_[A-Za-z0-9_-]{16,}",
)
TELEOPS_TOKEN_PREFIXES = ("tlo_in_", "tlo_ag_", "tlo_api_")


def _encoded_token_patterns() -> tuple[str, str]:
    """TeleOps tokens in base64 (std, URL-safe; every alignment) and in hex: the prefix's encoded form, then the
    rest of the run. Two patterns (one alternation each), so scanning costs two passes, not one per form."""
    fragments: set[str] = set()
    hexes: set[str] = set()
    for prefix in TELEOPS_TOKEN_PREFIXES:
        raw = prefix.encode("ascii")
        for offset in range(3):
            for encode in (base64.b64encode, base64.urlsafe_b64encode):
                text = encode(b"\0" * offset + raw).decode("ascii")
                fragments.add(text[(offset * 8 + 5) // 6 : ((offset + len(raw)) * 8) // 6])
        hexes.add(raw.hex())
    base64_run = "(?:" + "|".join(re.escape(f) for f in sorted(fragments)) + r")[A-Za-z0-9+/_-]{16,}={0,2}"
    hex_run = "(?i)(?:" + "|".join(sorted(hexes)) + r")[0-9a-f]{32,}"
    return base64_run, hex_run


BUILTIN_PATTERNS += _encoded_token_patterns()


def encodings_of(secret: str) -> list[str]:
    """The forms a known secret is looked for in: exact, base64 (std, URL-safe; every alignment), hex, URL, JSON."""
    raw = secret.encode("utf-8")
    forms = {secret, raw.hex(), raw.hex().upper(), urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret)}
    forms |= {json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]}  # JSON-escaped
    for offset in range(3):
        # Inside a larger base64 text the secret may start at any byte offset mod 3: encode with `offset`
        # filler bytes and keep only the characters that depend on the secret's bytes alone.
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            text = encode(b"\0" * offset + raw).decode("ascii")
            start = (offset * 8 + 5) // 6
            end = ((offset + len(raw)) * 8) // 6
            part = text[start:end]
            if len(part) >= 8:
                forms.add(part)
    return sorted((f for f in forms if f), key=len, reverse=True)


@dataclass(frozen=True, slots=True)
class SecretRules:
    """Compiled redaction rules. Build with `SecretRules.build`."""

    patterns: tuple[re.Pattern[str], ...]
    window: int

    @classmethod
    def build(cls, patterns: Iterable[str] = (), known_secrets: Iterable[str] = ()) -> SecretRules:
        """Built-ins + `patterns` (regular expressions) + `known_secrets` (exact values, min 4 characters).

        Raises ValueError for a pattern that does not compile or matches the empty string.
        """
        compiled = [re.compile(p) for p in (*BUILTIN_PATTERNS, *patterns)]
        for pattern in compiled:
            if pattern.fullmatch(""):
                raise ValueError(f"redaction pattern {pattern.pattern!r} matches the empty string")
        literals = sorted({form for s in known_secrets if len(s) >= 4 for form in encodings_of(s)}, key=len)
        window = MIN_WINDOW
        if literals:
            compiled.append(re.compile("|".join(re.escape(x) for x in reversed(literals))))
            window = max(window, len(literals[-1]) + 1)
        return cls(tuple(compiled), window)


def _spans(text: str, rules: SecretRules) -> list[tuple[int, int]]:
    """Merged (start, end) spans to mask, from every pattern."""
    spans: list[tuple[int, int]] = []
    for pattern in rules.patterns:
        for match in pattern.finditer(text):
            if "secret" in pattern.groupindex and match.group("secret") is not None:
                start, end = match.span("secret")
            else:
                start, end = match.span()
            if end > start:
                spans.append((start, end))
    spans.sort()
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def _match_extents(text: str, rules: SecretRules) -> list[tuple[int, int]]:
    """Whole-match extents (not just the secret group): what must be held back together."""
    return [m.span() for p in rules.patterns for m in p.finditer(text) if m.end() > m.start()]


def redact(text: str, rules: SecretRules) -> str:
    """`text` with every secret replaced by `[REDACTED]`."""
    return _apply_range(text, 0, len(text), _spans(text, rules))


class Redactor:
    """Redacts a stream of text chunks: `feed` returns what is safe to pass on now, `flush` the rest at the end.

    The concatenated output equals `redact` of the concatenated input whenever no single match is longer than
    MAX_HOLD, so a secret split across chunk boundaries never comes out.
    """

    def __init__(self, rules: SecretRules) -> None:
        self._rules = rules
        self._buffer = ""
        self._done = 0  # characters at the start of _buffer already passed on (kept as context for lookbehinds)

    def feed(self, chunk: str) -> str:
        buffer = self._buffer + chunk
        cut = max(self._done, len(buffer) - self._rules.window)
        # A match reaching into the held tail might still grow or be completed: hold it back whole.
        for start, end in sorted(_match_extents(buffer, self._rules)):
            if start < cut < end:
                cut = max(self._done, start)
        if len(buffer) - cut > MAX_HOLD:
            cut = len(buffer) - self._rules.window  # give up holding; what is passed on is still redacted
        return self._emit(buffer, cut)

    def flush(self) -> str:
        out = self._emit(self._buffer, len(self._buffer))
        self._buffer, self._done = "", 0
        return out

    def _emit(self, buffer: str, cut: int) -> str:
        clipped = [(max(a, self._done), min(b, cut)) for a, b in _spans(buffer, self._rules)]
        ready = _apply_range(buffer, self._done, cut, [(a, b) for a, b in clipped if a < b])
        keep = max(0, cut - CONTEXT)
        self._buffer, self._done = buffer[keep:], cut - keep
        return ready


def _apply_range(text: str, begin: int, end: int, spans: Sequence[tuple[int, int]]) -> str:
    out, last = [], begin
    for start, stop in spans:
        out.append(text[last:start])
        out.append(MASK)
        last = stop
    out.append(text[last:end])
    return "".join(out)
