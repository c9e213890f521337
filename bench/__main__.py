"""`python -m bench [--quick|--smoke] [--only B1,B2]`: run the benchmarks, print the table, write JSON and docs."""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import traceback
from pathlib import Path

from bench.context import Context, Mode
from bench.process import BenchError, set_pinning
from bench.report import (
    BenchOutcome,
    machine_description,
    render_markdown,
    render_table,
    update_docs,
    write_json,
)
from bench.suite import select

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_JSON = ROOT / "bench" / "results" / "latest.json"
DOCS = ROOT / "docs" / "benchmarks.md"


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="short runs: the whole suite in under 2 minutes")
    size.add_argument(
        "--smoke", action="store_true", help="tiny counts: proves the harness works, numbers mean nothing"
    )
    parser.add_argument("--only", default="", help="comma-separated ids, e.g. B2,B5")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"where to write JSON (default {DEFAULT_JSON})")
    parser.add_argument(
        "--docs",
        choices=("auto", "yes", "no"),
        default="auto",
        help="regenerate the results section of docs/benchmarks.md (auto: yes unless --smoke or --only)",
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin servers to CPU 0 and the client to CPU 1")
    return parser.parse_args(argv)


async def _run_all(mode: Mode, only: list[str]) -> list[BenchOutcome]:
    benchmarks = select(only)
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="teleops-bench-") as workdir:
        for bench in benchmarks:
            outcome = BenchOutcome(bench.id, bench.title)
            reason = bench.unavailable()
            if reason is not None:
                outcome.unavailable = reason
            else:
                print(f"running {bench.id} {bench.title} ({mode}) …", file=sys.stderr, flush=True)
                started = time.perf_counter()
                try:
                    outcome.rows = await bench.run(Context(mode, Path(workdir) / bench.id.lower()))
                except BenchError as exc:
                    outcome.error = str(exc).splitlines()[0]
                    print(f"{bench.id} failed: {exc}", file=sys.stderr)
                except Exception as exc:  # one broken benchmark must not hide the others' numbers
                    outcome.error = f"{type(exc).__name__}: {exc}"
                    traceback.print_exc()
                outcome.seconds = time.perf_counter() - started
            outcomes.append(outcome)
    return outcomes


def main(argv: list[str] | None = None) -> int:
    """Exit 0 when every benchmark ran (targets missed are reported, not an error), 1 when one broke, 2 usage."""
    args = _parse(sys.argv[1:] if argv is None else argv)
    mode: Mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    only = [part for part in args.only.split(",") if part.strip()]
    try:
        select(only)
    except ValueError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    set_pinning(not args.no_pin)
    machine = machine_description()
    outcomes = asyncio.run(_run_all(mode, only))
    print(render_table(outcomes))
    write_json(args.json, outcomes, machine, mode)
    print(f"\nJSON: {args.json}", file=sys.stderr)
    write_docs = args.docs == "yes" or (args.docs == "auto" and mode != "smoke" and not only)
    if write_docs:
        update_docs(DOCS, render_markdown(outcomes, machine, mode))
        print(f"results section of {DOCS} regenerated", file=sys.stderr)
    return 1 if any(outcome.error for outcome in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
