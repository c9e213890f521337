"""docs/threat-model.md T24: canary secrets in six encodings, split across chunk boundaries anywhere, never come out."""

from __future__ import annotations

import base64
import urllib.parse

from hypothesis import given, settings
from hypothesis import strategies as st

from teleops.domain.redaction import Redactor, SecretRules, redact

CANARY = "tlp-CANARY-7f3a9c-secret"
RULES = SecretRules.build(known_secrets=[CANARY])
RAW = CANARY.encode()
ENCODINGS = {
    "exact": CANARY,
    "base64": base64.b64encode(RAW).decode(),
    "base64url": base64.urlsafe_b64encode(b"\xff\xfe" + RAW).decode(),
    "hex": RAW.hex(),
    "HEX": RAW.hex().upper(),
    "url": urllib.parse.quote("?k=" + CANARY + "&x=/", safe=""),
}
# The secret-bearing core of each encoding: if any of these survive, the secret can be recovered.
NEEDLES = [CANARY, RAW.hex(), RAW.hex().upper(), base64.b64encode(RAW).decode()[:28]]


def leaked(out: str) -> bool:
    return any(needle in out for needle in NEEDLES) or any(
        needle in out for needle in (ENCODINGS["base64url"][4:30], ENCODINGS["url"][6:26])
    )


def test_every_encoding_is_masked_in_one_piece() -> None:
    for name, encoded in ENCODINGS.items():
        text = f"env dump\nVALUE={encoded}\n"
        assert not leaked(redact(text, RULES)), name


def test_every_encoding_split_at_every_boundary_is_masked() -> None:
    for name, encoded in ENCODINGS.items():
        text = f"before {encoded} after"
        for cut in range(len(text) + 1):
            redactor = Redactor(RULES)
            out = redactor.feed(text[:cut]) + redactor.feed(text[cut:]) + redactor.flush()
            assert not leaked(out), (name, cut, out)


def decodable_fragments(text: str) -> list[bytes]:
    """Every base64 decoding of every unmasked piece, at each of the four character alignments."""
    found = []
    for piece in text.split("[REDACTED]"):
        for offset in range(4):
            usable = piece[offset:]
            usable = usable[: len(usable) - len(usable) % 4]
            found.append(base64.b64decode(usable.replace("=", "A"), validate=False))
    return found


def test_base64_inside_a_larger_blob_is_masked_at_every_alignment() -> None:
    for pad in range(6):
        blob = base64.b64encode(b"x" * pad + b"DATABASE_URL=" + RAW + b"\n").decode()
        assert any(b"CANARY" in f for f in decodable_fragments(blob))  # the check can see the secret...
        out = redact(blob, RULES)
        assert not any(b"CANARY" in f or b"7f3a9c" in f for f in decodable_fragments(out)), pad  # ...but not here


@settings(max_examples=200, deadline=None)
@given(
    prefix=st.text(max_size=300),
    suffix=st.text(max_size=300),
    which=st.sampled_from(sorted(ENCODINGS)),
    cuts=st.lists(st.integers(min_value=0, max_value=700), max_size=6),
)
def test_random_chunking_never_leaks(prefix: str, suffix: str, which: str, cuts: list[int]) -> None:
    text = f"{prefix} {ENCODINGS[which]} {suffix}"
    bounds = sorted({min(c, len(text)) for c in cuts})
    redactor = Redactor(RULES)
    out, last = [], 0
    for bound in [*bounds, len(text)]:
        out.append(redactor.feed(text[last:bound]))
        last = bound
    out.append(redactor.flush())
    assert not leaked("".join(out))
