"""The benchmark harness runs end to end and reports: a table on stdout and JSON with the expected keys.

Never a timing: numbers from a smoke run on a shared machine mean nothing; bench/ owns performance.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


@pytest.mark.timeout(300)
def test_bench_smoke_prints_the_table_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "latest.json"
    docs_before = (ROOT / "docs" / "benchmarks.md").read_bytes() if (ROOT / "docs" / "benchmarks.md").exists() else None

    done = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--only", "B1,B10", "--json", str(out), "--no-pin"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )

    assert done.returncode == 0, done.stderr[-3000:]
    header = done.stdout.splitlines()[0].split()
    assert header[:7] == ["id", "metric", "TeleOps", "peer", "ratio", "target", "result"]
    assert any(line.startswith("B1 ") for line in done.stdout.splitlines())
    assert any(line.startswith("B10 ") for line in done.stdout.splitlines())

    report = json.loads(out.read_text())
    assert report["mode"] == "smoke"
    assert {"nproc", "cpu_model", "memory_mib", "python", "date"} <= report["machine"].keys()
    assert [bench["id"] for bench in report["benchmarks"]] == ["B1", "B10"]
    for bench in report["benchmarks"]:
        assert bench["error"] is None
        assert bench["unavailable"] is None
        assert bench["rows"], f"{bench['id']} reported no rows"
        for row in bench["rows"]:
            assert {"metric", "unit", "teleops", "peer", "ratio", "target", "passed"} <= row.keys()
            assert row["teleops"] is not None
            assert row["teleops"] > 0
    b1 = report["benchmarks"][0]["rows"][0]
    assert b1["peer_name"] == "bare Starlette"
    assert b1["peer"] > 0
    assert b1["passed"] in (True, False)

    # A smoke run with --only never rewrites the published results.
    docs_after = (ROOT / "docs" / "benchmarks.md").read_bytes() if (ROOT / "docs" / "benchmarks.md").exists() else None
    assert docs_after == docs_before


def test_bench_refuses_an_unknown_benchmark_id(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--only", "B99", "--json", str(tmp_path / "x.json")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "unknown benchmark B99" in done.stderr
    assert not (tmp_path / "x.json").exists()


def test_every_gap_note_names_a_published_row() -> None:
    """GAP_NOTES is keyed by (benchmark, metric): a renamed metric would silently lose its note."""
    from bench.report import GAP_NOTES

    rows = set()
    for line in (ROOT / "docs" / "benchmarks.md").read_text().splitlines():
        if line.startswith("| B"):
            cells = [cell.strip() for cell in line.strip("|").split(" | ")]
            rows.add((cells[0], cells[1].replace("\\|", "|")))
    missing = [key for key in GAP_NOTES if key not in rows]
    assert not missing, f"GAP_NOTES names rows the published table does not have: {missing}"
