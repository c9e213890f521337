"""Alert bodies: the same alerts in Alertmanager's webhook form (for TeleOps) and its API v2 form."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["FIRING_FIXTURE", "am_v2_body", "labels_of", "webhook_body"]

FIRING_FIXTURE = (
    Path(__file__).resolve().parent.parent / "src" / "teleops" / "sources" / "alertmanager" / "fixtures" / "firing.json"
)
STARTS_AT = "2026-11-25T09:03:47Z"


def labels_of(index: int, run: str) -> dict[str, str]:
    """Labels of the index-th distinct alert of a run; `run` keeps runs apart in one database."""
    return {
        "alertname": f"BenchAlert{index % 50}",
        "instance": f"host-{index}.bench.internal:9100",
        "job": "node",
        "severity": "critical" if index % 3 == 0 else "warning",
        "run": run,
        "seq": str(index),
    }


def _annotations(index: int) -> dict[str, str]:
    return {
        "summary": f"Disk / is 97% full on host-{index}",
        "description": f"Filesystem / on host-{index} has less than 3% free space.",
    }


def _alert(index: int, run: str) -> dict[str, Any]:
    return {
        "labels": labels_of(index, run),
        "annotations": _annotations(index),
        "startsAt": STARTS_AT,
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": f"http://prometheus.bench.internal:9090/graph?g0.expr=up&i={index}",
    }


def webhook_body(indices: range | list[int], run: str) -> bytes:
    """An Alertmanager webhook (version 4) carrying the alerts `indices`, as Alertmanager would post it."""
    items = []
    for index in indices:
        item = _alert(index, run)
        item["status"] = "firing"
        item["fingerprint"] = f"{run}-{index:012x}"
        items.append(item)
    common = {"job": "node", "run": run}
    body = {
        "receiver": "teleops",
        "status": "firing",
        "alerts": items,
        "groupLabels": {"alertname": items[0]["labels"]["alertname"]} if items else {},
        "commonLabels": common,
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.bench.internal:9093",
        "version": "4",
        "groupKey": f'{{}}:{{run="{run}"}}',
        "truncatedAlerts": 0,
    }
    return json.dumps(body, separators=(",", ":")).encode()


def am_v2_body(indices: range | list[int], run: str) -> bytes:
    """The same alerts as a POST /api/v2/alerts body for Alertmanager (a JSON list)."""
    endless = []
    for index in indices:
        item = _alert(index, run)
        # Alertmanager treats a zero endsAt as "not given" only when the field is absent.
        del item["endsAt"]
        endless.append(item)
    return json.dumps(endless, separators=(",", ":")).encode()
