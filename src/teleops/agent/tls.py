"""How the agent knows it is talking to its controller (docs/threat-model.md T16): TLS trust, public-key pins, and the
warning for a token sent in clear.

- `--ca-file FILE`: only that CA's chain is trusted (and the host name must match the certificate).
- `--pin sha256//BASE64` (repeatable, for rotation): the SHA-256 of the controller certificate's
  SubjectPublicKeyInfo, the convention of HPKP and curl's `--pinnedpubkey`. Alone, the pin is the trust anchor
  (a self-signed controller certificate is fine; chain and host name are not checked, the key is); with
  `--ca-file`, both must hold.
- Neither: the system store, as a browser would (a warning at start says the controller is not pinned).

The pin is checked inside the TLS handshake: the context's SSL objects finish the handshake, then compare the
peer's key with the pins and fail the handshake on a mismatch. asyncio (and so websockets) reports the
connection as open only after that, and the token travels in the HTTP upgrade request written after it: a
controller with the wrong key never receives a byte of application data, let alone the token.

No `cryptography` here (the agent's environment does not carry it): the public key is cut out of the DER
certificate by a small DER walker (`spki_der`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

__all__ = [
    "Pin",
    "PinMismatch",
    "TLSConfigError",
    "client_context",
    "is_loopback_host",
    "parse_pins",
    "plaintext_warning",
    "spki_der",
    "spki_pin",
]

PIN_FORMS = "sha256//BASE64, sha256:BASE64 or sha256:HEX"


class TLSConfigError(ValueError):
    """--pin/--ca-file cannot be used as given; the message says what to fix."""


@dataclass(frozen=True, slots=True)
class Pin:
    """SHA-256 of a DER SubjectPublicKeyInfo."""

    digest: bytes

    def __str__(self) -> str:
        return "sha256//" + base64.b64encode(self.digest).decode("ascii")


class PinMismatch(ssl.SSLCertVerificationError):
    """The controller's public key is none of the pinned ones: the handshake is failed, nothing is sent.

    An `ssl.SSLError` so that asyncio fails the handshake with it (and passes it on unchanged)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.library = "teleops"
        self.reason = "PIN_MISMATCH"
        self.verify_code = 0
        self.verify_message = message

    def __str__(self) -> str:
        return self.message


def parse_pins(values: Iterable[str]) -> tuple[Pin, ...]:
    """`--pin` values (each may hold several separated by `;`, as curl's) → pins, without duplicates.

    Accepted: `sha256//BASE64` (curl, HPKP), `sha256:BASE64`, `sha256:HEX` (64 hex digits, colons allowed).
    Raises TLSConfigError."""
    pins: dict[Pin, None] = {}
    for value in values:
        for text in value.split(";"):
            if text.strip():
                pins[_parse_pin(text.strip())] = None
    return tuple(pins)


def _parse_pin(text: str) -> Pin:
    lowered = text.lower()
    for prefix in ("sha256//", "sha256:"):
        if lowered.startswith(prefix):
            value = text[len(prefix) :]
            break
    else:
        raise TLSConfigError(
            f"--pin {text!r} must be {PIN_FORMS}: the SHA-256 of the controller's public key "
            "(see docs/install-agent.md, TLS)"
        )
    hexed = value.replace(":", "")
    digest: bytes | None = None
    if len(hexed) == 64:
        try:
            digest = bytes.fromhex(hexed)
        except ValueError:
            digest = None
    if digest is None:
        try:
            digest = base64.b64decode(value + "=" * (-len(value) % 4), validate=True)
        except (binascii.Error, ValueError):
            digest = b""
    if len(digest) != hashlib.sha256().digest_size:
        raise TLSConfigError(
            f"--pin {text!r} is not a SHA-256 digest ({PIN_FORMS}: 32 bytes, 44 base64 characters or 64 hex digits)"
        )
    return Pin(digest)


# -- the public key of a DER certificate, without `cryptography` -----------------------------------------------

_SEQUENCE = 0x30
_INTEGER = 0x02
_VERSION = 0xA0  # [0] EXPLICIT Version, absent in v1 certificates


def _element(der: bytes, offset: int, limit: int) -> tuple[int, int, int]:
    """The DER element at `offset` (which must end by `limit`): (tag, start of its contents, end)."""
    if offset + 2 > limit:
        raise ValueError("truncated DER element")
    tag, first = der[offset], der[offset + 1]
    if tag & 0x1F == 0x1F:
        raise ValueError("multi-byte DER tags do not occur in a certificate's outer structure")
    start = offset + 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or start + count > limit:
            raise ValueError("invalid DER length (indefinite or too long)")
        length = int.from_bytes(der[start : start + count], "big")
        start += count
    end = start + length
    if end > limit:
        raise ValueError("DER element runs past its container")
    return tag, start, end


def spki_der(certificate: bytes) -> bytes:
    """The DER SubjectPublicKeyInfo of a DER X.509 certificate. Raises ValueError when it is not one.

    Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signature }
    TBSCertificate ::= SEQUENCE { [0] version OPTIONAL, serialNumber, signature, issuer, validity, subject,
                                  subjectPublicKeyInfo, ... }"""
    tag, start, _ = _element(certificate, 0, len(certificate))
    if tag != _SEQUENCE:
        raise ValueError("a certificate is a DER SEQUENCE")
    tag, position, tbs_end = _element(certificate, start, len(certificate))
    if tag != _SEQUENCE:
        raise ValueError("tbsCertificate is a DER SEQUENCE")
    tag, _, end = _element(certificate, position, tbs_end)
    if tag == _VERSION:
        position = end
    # serialNumber, signature (AlgorithmIdentifier), issuer, validity, subject
    for expected in (_INTEGER, _SEQUENCE, _SEQUENCE, _SEQUENCE, _SEQUENCE):
        tag, _, end = _element(certificate, position, tbs_end)
        if tag != expected:
            raise ValueError(f"unexpected DER tag {tag:#04x} in tbsCertificate")
        position = end
    tag, _, end = _element(certificate, position, tbs_end)
    if tag != _SEQUENCE:
        raise ValueError("subjectPublicKeyInfo is a DER SEQUENCE")
    return certificate[position:end]


def spki_pin(certificate: bytes) -> Pin:
    """The pin of a DER certificate's public key. Raises ValueError."""
    return Pin(hashlib.sha256(spki_der(certificate)).digest())


# -- the SSL context -------------------------------------------------------------------------------------------


def _check_pins(certificate: bytes | None, host: str | None, pins: tuple[Pin, ...]) -> None:
    expected = ", ".join(str(pin) for pin in pins)
    where = f"the controller at {host}" if host else "the controller"
    if certificate is None:
        raise PinMismatch(f"TLS pin mismatch: {where} presented no certificate; not sending the token")
    try:
        presented = spki_pin(certificate)
    except ValueError as exc:
        raise PinMismatch(
            f"TLS pin mismatch: {where} presented a certificate whose public key cannot be read ({exc}); "
            "not sending the token"
        ) from None
    if presented in pins:
        return
    hint = ""
    if Pin(hashlib.sha256(certificate).digest()) in pins:
        hint = (
            " (a pin is the SHA-256 of the whole certificate; pins are of its public key: see "
            "docs/install-agent.md, TLS)"
        )
    raise PinMismatch(
        f"TLS pin mismatch: {where} presented {presented}, expected one of {expected}{hint}; not sending the token"
    )


def _pinned_classes(pins: tuple[Pin, ...]) -> tuple[type[ssl.SSLObject], type[ssl.SSLSocket]]:
    class PinnedSSLObject(ssl.SSLObject):  # what asyncio (and so websockets) uses
        def do_handshake(self) -> None:
            super().do_handshake()  # raises SSLWantReadError until the handshake is done
            _check_pins(self.getpeercert(binary_form=True), self.server_hostname, pins)

    class PinnedSSLSocket(ssl.SSLSocket):  # blocking sockets, should anything wrap one with this context
        def do_handshake(self, block: bool = False) -> None:
            super().do_handshake(block)
            try:
                _check_pins(self.getpeercert(binary_form=True), self.server_hostname, pins)
            except PinMismatch:
                self.close()
                raise

    return PinnedSSLObject, PinnedSSLSocket


def client_context(ca_file: Path | None, pins: tuple[Pin, ...]) -> ssl.SSLContext:
    """The TLS client context for wss://. Raises TLSConfigError when --ca-file cannot be used."""
    try:
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file is not None else None)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise TLSConfigError(f"cannot use --ca-file {ca_file}: {detail}; it must be the CA's PEM file") from exc
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if pins:
        if ca_file is None:
            # The pinned key is the trust anchor: a self-signed controller certificate is fine. TLS still makes
            # the server prove it holds the pinned key's private half (CertificateVerify), so this is no weaker
            # than a CA that signs only for this key.
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        context.sslobject_class, context.sslsocket_class = _pinned_classes(pins)
    return context


# -- plain ws:// -----------------------------------------------------------------------------------------------


def is_loopback_host(host: str) -> bool:
    """`localhost`, 127.0.0.0/8, ::1 (and ::ffff:127.x). Names are not resolved: only `localhost` counts."""
    name = host.strip().strip("[]").rstrip(".").lower()
    if name == "localhost":
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def plaintext_warning(url: str) -> str | None:
    """The warning for a `ws://` URL to a host other than this one; None for wss:// and loopback."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("ws", "http"):
        return None
    host = parts.hostname or ""
    if is_loopback_host(host):
        return None
    return (
        f"sending the agent token in clear over ws:// to {host}: anyone on the path can read it and impersonate "
        "this agent; use https:// with --ca-file or --pin"
    )
