"""The sample Prometheus rules (deploy/prometheus/teleops-rules.yml) parse, fire on the series they are meant for
(`promtool test rules`), and name only metrics a running controller exports."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from tests.conftest import Api

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
PROMTOOL = "/usr/bin/promtool"  # Debian's prometheus package; scripts/test installs it


def test_the_rules_parse_and_fire_on_their_series() -> None:
    checked = subprocess.run([PROMTOOL, "check", "rules", "teleops-rules.yml"], cwd=RULES, capture_output=True)
    assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()
    tested = subprocess.run([PROMTOOL, "test", "rules", "teleops-rules.test.yml"], cwd=RULES, capture_output=True)
    assert tested.returncode == 0, tested.stdout.decode() + tested.stderr.decode()


async def test_every_metric_the_rules_name_is_exported(api: Api) -> None:
    response = await api.client.get("/metrics")
    assert response.status_code == 200
    exported: set[str] = set()
    for family in api.services.metrics.registry.collect():
        exported.add(family.name)
        if family.type == "counter":
            exported.add(f"{family.name}_total")
    rules = yaml.safe_load((RULES / "teleops-rules.yml").read_text())
    named = {
        name
        for group in rules["groups"]
        for rule in group["rules"]
        for name in re.findall(r"\bteleops_[a-z_]+", rule["expr"])
    }
    assert named, "the rules name no TeleOps metric"
    assert named <= exported, f"not exported: {sorted(named - exported)}"
