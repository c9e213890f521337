"""Rows of results, the printed table, the JSON file and the results section of docs/benchmarks.md."""

from __future__ import annotations

import json
import os
import platform
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "BenchOutcome",
    "Row",
    "at_least",
    "at_most",
    "info",
    "machine_description",
    "render_markdown",
    "render_table",
    "update_docs",
    "write_json",
]

Direction = Literal["higher", "lower", "info"]
DOC_START = "<!-- bench:results:start -->"
DOC_END = "<!-- bench:results:end -->"


@dataclass
class Row:
    """One metric: TeleOps' value, the peer's, their ratio (TeleOps / peer) and the target on it."""

    bench: str
    metric: str
    unit: str
    teleops: float | None
    peer: float | None
    peer_name: str
    direction: Direction
    limit: float | None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.teleops is None or self.peer is None or self.peer == 0:
            return None
        return self.teleops / self.peer

    @property
    def target(self) -> str:
        if self.direction == "info" or self.limit is None:
            return "—"
        return f"{'≥' if self.direction == 'higher' else '≤'} {self.limit:g}×"

    @property
    def passed(self) -> bool | None:
        """True/False against the target; None when the row has no target or no number."""
        ratio = self.ratio
        if self.direction == "info" or self.limit is None or ratio is None:
            return None
        return ratio >= self.limit if self.direction == "higher" else ratio <= self.limit

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(ratio=self.ratio, target=self.target, passed=self.passed)
        return data


def at_least(bench: str, metric: str, unit: str, teleops: float, peer: float, peer_name: str, limit: float) -> Row:
    """A higher-is-better metric (throughput): passes when TeleOps / peer ≥ limit."""
    return Row(bench, metric, unit, teleops, peer, peer_name, "higher", limit)


def at_most(bench: str, metric: str, unit: str, teleops: float, peer: float, peer_name: str, limit: float) -> Row:
    """A lower-is-better metric (latency, memory): passes when TeleOps / peer ≤ limit."""
    return Row(bench, metric, unit, teleops, peer, peer_name, "lower", limit)


def info(
    bench: str, metric: str, unit: str, teleops: float | None, peer: float | None = None, peer_name: str = ""
) -> Row:
    """A number reported without a target."""
    return Row(bench, metric, unit, teleops, peer, peer_name, "info", None)


@dataclass
class BenchOutcome:
    """What one benchmark produced: rows, or the reason it could not run."""

    id: str
    title: str
    rows: list[Row] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None
    unavailable: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "seconds": round(self.seconds, 2),
            "error": self.error,
            "unavailable": self.unavailable,
            "rows": [row.to_json() for row in self.rows],
        }


def machine_description() -> dict[str, Any]:
    """CPU count and model, memory, Python and OS, and the date: what a reader needs to weigh the numbers."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_mib = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_mib = int(line.split()[1]) // 1024
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "memory_mib": memory_mib,
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _number(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit in ("req/s", "alerts/s", "msg/s", "edits/s") or abs(value) >= 100:
        return f"{value:,.0f} {unit}"
    if abs(value) >= 10:
        return f"{value:.1f} {unit}"
    return f"{value:.3g} {unit}"


def _verdict(row: Row) -> str:
    passed = row.passed
    return "—" if passed is None else ("pass" if passed else "FAIL")


# Where docs/benchmarks.md explains a target TeleOps misses, shown in the note of a failing row (kept here, not
# in the table, so a regenerated table keeps them). Keyed by (benchmark, metric).
GAP_NOTES = {
    ("B1", "repeated alert throughput (c=32)"): 'duplicate path profiled: "Ingest after ADR 0003"',
    ("B2", "distinct alerts throughput, SQLite (c=32)"): 'durable vs in-memory; "B2 ingest (third session)"',
    ("B2", "distinct alerts throughput, PostgreSQL (c=32)"): 'asyncpg round trips per batch; "B2 ingest"',
    ("B2", "distinct alerts p99, PostgreSQL"): 'asyncpg round trips per batch; "B2 ingest"',
    ("B3", "alert → first chat call, p50"): 'out of reach: the durable minimum alone is ~2.8×; "Fifth session"',
    ("B3", "alert → first chat call, p99"): 'tail on one core: fsync, GC, checkpoints; "Fifth session"',
    ("B6", "`true` via API, p50"): 'out of reach: the durable minimum is ~2× the floor; "Fourth session"',
    ("B8", "100 × `sleep 0.1` all done (wall)"): 'one core for controller, agent and 100 processes; "the cgroup move"',
    ("B11", "absolute p99, PostgreSQL (issue target < 10 ms)"): 'asyncpg round trips; "B11 on PostgreSQL"',
}


def _note(row: Row) -> str:
    gap = GAP_NOTES.get((row.bench, row.metric), "") if row.passed is False else ""
    return "; ".join(n for n in (row.note, gap) if n)


def _cells(outcome: BenchOutcome) -> list[list[str]]:
    if outcome.unavailable or outcome.error:
        reason = outcome.unavailable or f"error: {outcome.error}"
        return [[outcome.id, outcome.title, "not measured", "", "", "", "", reason]]
    cells = []
    for row in outcome.rows:
        ratio = row.ratio
        cells.append(
            [
                row.bench,
                row.metric,
                _number(row.teleops, row.unit),
                (_number(row.peer, row.unit) + (f" ({row.peer_name})" if row.peer_name else "")) if row.peer else "—",
                "—" if ratio is None else f"{ratio:.2f}×",
                row.target,
                _verdict(row),
                _note(row),
            ]
        )
    return cells


HEADER = ["id", "metric", "TeleOps", "peer", "ratio", "target", "result", "note"]


def render_table(outcomes: list[BenchOutcome]) -> str:
    """A plain-text table for the terminal."""
    rows = [HEADER] + [cells for outcome in outcomes for cells in _cells(outcome)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER) - 1)]
    lines = []
    for index, cells in enumerate(rows):
        line = "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=False))
        lines.append((line + "  " + cells[-1]).rstrip())
        if index == 0:
            lines.append("-" * min(160, sum(widths) + 2 * len(widths) + 4))
    return "\n".join(lines)


def render_markdown(outcomes: list[BenchOutcome], machine: dict[str, Any], mode: str) -> str:
    """The results section of docs/benchmarks.md."""
    lines = [
        f"Run `{'scripts/bench' + (' --quick' if mode == 'quick' else '')}` ({mode} mode) on {machine['date']}.",
        "",
        f"Machine: {machine['nproc']} CPUs ({machine['cpu_model']}), {machine['memory_mib']:,} MiB memory, "
        f"Python {machine['python']}, {machine['os']}.",
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "---|" * len(HEADER),
    ]
    for outcome in outcomes:
        for cells in _cells(outcome):
            lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines)


def write_json(path: Path, outcomes: list[BenchOutcome], machine: dict[str, Any], mode: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"mode": mode, "machine": machine, "benchmarks": [outcome.to_json() for outcome in outcomes]}
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def update_docs(path: Path, section: str) -> None:
    """Replace the text between the results markers of `path` (creating the markers at the end if absent)."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    block = f"{DOC_START}\n{section}\n{DOC_END}"
    pattern = re.compile(re.escape(DOC_START) + r".*?" + re.escape(DOC_END), re.DOTALL)
    text = pattern.sub(lambda _m: block, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)
