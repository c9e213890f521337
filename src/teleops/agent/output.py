"""Command output: a capped head + tail buffer with bounded memory, and a safe way to show bytes to a person."""

from __future__ import annotations

import unicodedata

__all__ = ["CappedOutput", "kept_parts", "printable", "truncation_marker"]


def truncation_marker(dropped: int) -> bytes:
    """The line put between head and tail when output was cut."""
    return f"[… {dropped} bytes truncated …]\n".encode()


def kept_parts(cap: int) -> tuple[int, int]:
    """How many bytes of output longer than ``cap`` are kept: (from its start, from its end); together ``cap``."""
    return cap // 2, cap - cap // 2


class CappedOutput:
    """Keeps the first half of ``cap`` bytes (the head) and the last half (the tail), counting everything.

    Memory stays within about ``cap`` bytes whatever is fed: bytes past the head go to a tail window that drops
    its oldest bytes. ``feed`` returns the part of a chunk that landed in the head, which is what gets streamed.
    """

    def __init__(self, cap: int) -> None:
        if cap < 2:
            raise ValueError(f"output cap must be at least 2 bytes, got {cap}")
        self._head_cap, self._tail_cap = kept_parts(cap)
        self._head = bytearray()
        self._tail = bytearray()
        self.total = 0  # every byte fed, kept or not
        self.dropped = 0  # bytes that fell out between head and tail

    @property
    def truncated(self) -> bool:
        return self.dropped > 0

    def feed(self, chunk: bytes) -> bytes:
        """Account for a chunk; returns its prefix that fit in the head (empty once the head is full)."""
        self.total += len(chunk)
        room = self._head_cap - len(self._head)
        to_head = chunk[:room] if room > 0 else b""
        self._head += to_head
        rest = chunk[len(to_head) :]
        if rest:
            if len(rest) >= self._tail_cap:
                # The whole window is replaced: everything already in it plus the front of rest is dropped.
                self.dropped += len(self._tail) + len(rest) - self._tail_cap
                self._tail[:] = rest[-self._tail_cap :]
            else:
                self._tail += rest
                excess = len(self._tail) - self._tail_cap
                if excess > 0:
                    del self._tail[:excess]
                    self.dropped += excess
        return to_head

    def value(self) -> bytes:
        """Head + tail, with a marker line between them when bytes were dropped."""
        if not self.truncated:
            return bytes(self._head + self._tail)
        sep = b"" if self._head.endswith(b"\n") or not self._head else b"\n"
        return bytes(self._head) + sep + truncation_marker(self.dropped) + bytes(self._tail)


_KEEP = frozenset("\n\t")
# Cc: C0/C1 controls. Cf: bidi overrides/isolates, zero-width characters, BOM. Zl/Zp break chat layouts.
# Co/Cn: private-use and unassigned code points have no agreed rendering (and may gain one later).
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Co", "Cn", "Zl", "Zp"})


def _escape(ch: str) -> str:
    code = ord(ch)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def printable(data: bytes) -> str:
    """Decode output for display: UTF-8 with U+FFFD for invalid bytes; controls shown as visible escapes.

    C0/C1 controls (except newline and tab), DEL, ANSI escape sequences (their ESC byte), bidi controls,
    zero-width characters, line/paragraph separators, private-use and unassigned code points come out as
    ``\\x1b`` / ``\\u202e`` style text, so command output can neither move the cursor, clear a terminal
    nor reorder what a reader sees.
    """
    text = data.decode("utf-8", errors="replace")
    if text.isprintable():  # the common single-line case: nothing to escape
        return text
    out: list[str] = []
    for ch in text:
        if ch in _KEEP:
            out.append(ch)
        elif unicodedata.category(ch) in _ESCAPED_CATEGORIES:
            out.append(_escape(ch))
        else:
            out.append(ch)
    return "".join(out)
