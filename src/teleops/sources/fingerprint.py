"""Fingerprints for senders that do not send one: stable, readable when short, always fit storage."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from teleops.sources.payload import MAX_NAME_LENGTH

__all__ = ["digest_fingerprint", "joined_fingerprint", "labels_fingerprint"]


def digest_fingerprint(*parts: str) -> str:
    """16 hex digits of SHA-256 over `parts`; the same parts always give the same fingerprint."""
    material = "\x00".join(parts)
    return hashlib.sha256(material.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def joined_fingerprint(*parts: str) -> str:
    """`parts` joined with "/" (readable in the UI and logs); their digest when that would not fit 255 characters.

    Callers pass names their sender keeps free of "/" (Sensu names, Zabbix ids) or accept that
    "a/b"+"c" and "a"+"b/c" meet.
    """
    joined = "/".join(parts)
    if len(joined) <= MAX_NAME_LENGTH:
        return joined
    return digest_fingerprint(*parts)


def labels_fingerprint(labels: Mapping[str, str]) -> str:
    """A digest of the whole label set, as Alertmanager computes its own (order does not matter)."""
    canonical = "\x00".join(f"{k}\x01{v}" for k, v in sorted(labels.items()))
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()[:16]
