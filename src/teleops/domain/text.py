"""Untrusted text made safe to show: control characters, ANSI escapes and bidi overrides become visible.

Alert labels, annotations and command output can carry anything. Shown raw, `ESC[2J` clears a
terminal-like view and U+202E reverses what the reader sees (THREATS T25). `visible` keeps newlines
and tabs and turns every other control, format (bidi, zero-width) or separator character into a
visible escape such as `\\x1b` or `\\u202e`, so the reader sees that something odd was there.
"""

from __future__ import annotations

import unicodedata

__all__ = ["visible"]

_KEEP = frozenset("\n\t")
# Unicode categories that draw nothing or move other text: controls, format (bidi overrides,
# zero-width joiners), line/paragraph separators, surrogates, private use, unassigned.
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})


def _escape(char: str) -> str:
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def visible(text: str) -> str:
    """`text` with every invisible or steering character replaced by its escape; newlines and tabs kept.

    `\\r\\n` becomes `\\n` (a lone `\\r` is escaped: it can overwrite a line on screen). Never raises.
    """
    text = text.replace("\r\n", "\n")
    if text.isprintable() and "\r" not in text:
        return text  # fast path: nothing to escape (isprintable is False for \n and \t, so this is rare)
    out: list[str] = []
    for char in text:
        if char in _KEEP or (char == " ") or unicodedata.category(char) not in _HIDDEN_CATEGORIES:
            out.append(char)
        else:
            out.append(_escape(char))
    return "".join(out)
