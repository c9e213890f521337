"""The sample alert a newcomer fires to see the whole loop: the `curl` printed at first start and the web UI's
"Fire a test alert" button send the same body to the same generic source, so both land in one incident."""

from __future__ import annotations

import json

__all__ = ["SAMPLE_CHECK", "sample_alert_body", "sample_alert_json"]

SAMPLE_CHECK = "DiskFull"


def sample_alert_body(host: str) -> dict[str, str]:
    """The generic-source body of the sample alert about `host` (the embedded agent's name, by default)."""
    return {"summary": "Disk / is 97% full", "host": host, "check": SAMPLE_CHECK, "severity": "critical"}


def sample_alert_json(host: str) -> str:
    return json.dumps(sample_alert_body(host))
