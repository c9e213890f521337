"""What a redirect after a form tells the page it lands on ("Not done: …", "Override removed: …"), signed.

A Post/Redirect/Get answer carries its message in the query string, so a crafted link could otherwise make a page
show any text an attacker likes in the place where the system speaks ("Your session expired: sign in again at
https://evil.example"). So every such message travels with `sig`, an HMAC of the message keyed with the reader's
own CSRF token (server/session.py: secret to their session, never in a URL); a page shows the message only when the
signature holds, and shows nothing otherwise. A link made for another session, or edited, says nothing.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import urlencode

from teleops.server.routes.ui_common import UiUser

__all__ = ["SIGNATURE_FIELD", "signed_message", "verified_message"]

SIGNATURE_FIELD = "sig"


def _signature(user: UiUser, field: str, text: str) -> str:
    message = f"ui-notice\x00{field}\x00{text}".encode()
    return hmac.new(user.csrf_token.encode(), message, hashlib.sha256).hexdigest()[:32]


def signed_message(user: UiUser, field: str, text: str) -> str:
    """The query string `field=text&sig=…` that `verified_message` accepts for `user`'s session only."""
    return urlencode({field: text, SIGNATURE_FIELD: _signature(user, field, text)})


def verified_message(user: UiUser, field: str, text: str | None, signature: str | None) -> str | None:
    """`text` when `signature` is this session's signature of it under `field`; None for a forged or foreign one."""
    if not text or not signature or not signature.isascii():
        return None
    return text if hmac.compare_digest(signature, _signature(user, field, text)) else None
