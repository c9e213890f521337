"""Rewrite every `*.expected.json` from what the parsers produce now: `python -m tests.contract.regenerate`.

Review the diff (`git diff src/teleops/sources`) before committing: the expected files are the
reviewed contract, and this tool only saves typing them.
"""

from __future__ import annotations

import sys

from teleops.sources.registry import SOURCES

from .source_fixtures import fixtures_of, parsed_json, render_expected


def main() -> int:
    changed = 0
    for source in SOURCES:
        for fixture in fixtures_of(source):
            text = render_expected(parsed_json(fixture))
            old = fixture.expected.read_text(encoding="utf-8") if fixture.expected.exists() else None
            if text != old:
                fixture.expected.write_text(text, encoding="utf-8")
                changed += 1
                print(f"{'updated' if old is not None else 'created'} {fixture.expected}")
    print(f"{changed} expected file(s) written; review them with `git diff` before committing")
    return 0


if __name__ == "__main__":
    sys.exit(main())
