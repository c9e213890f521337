"""Every install command that README.md and docs/ show, exactly as written there (without `sudo ` and a
trailing `# comment`), grouped by the test that runs it. tests/unit/test_install_docs.py fails when a doc shows
an install command that is not listed here, so a new one cannot appear in the docs without being run.

Paths in these commands are the docs' own (/opt/teleops, /tmp/, ./dist/); the tests put them under their
temporary directories with `for_test`.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping

__all__ = [
    "AGENT_INSTALL",
    "AGENT_INSTALL_OFFLINE",
    "CHECKOUT",
    "DUO_IN_CHECKOUT",
    "RUN_BY_CI",
    "WHEEL_INSTALL",
    "all_commands",
    "for_test",
]

# tests/integration/test_scripts_serve.py
CHECKOUT = ("scripts/serve", "PYTHON=/usr/bin/python3 scripts/serve")
DUO_IN_CHECKOUT = ".venv/bin/pip install 'duo_client>=5.3'"

# tests/integration/test_fresh_install.py
WHEEL_INSTALL = (
    "scripts/wheel",
    "python3 -m venv /opt/teleops",
    "/opt/teleops/bin/pip install ./dist/teleops-0.1.0-py3-none-any.whl",
    "/opt/teleops/bin/pip install './dist/teleops-0.1.0-py3-none-any.whl[duo]'",
)

# tests/integration/test_agent_install.py
AGENT_INSTALL = (
    "python3 -m venv /opt/teleops",
    "/opt/teleops/bin/pip install --require-hashes -r /tmp/agent.lock",
    "/opt/teleops/bin/pip install --no-deps /tmp/teleops-0.1.0-py3-none-any.whl",
)
AGENT_INSTALL_OFFLINE = (
    "python3 -m pip download --require-hashes -r dist/agent.lock -d agent-wheels/",
    "/opt/teleops/bin/pip install --no-index --find-links /tmp/agent-wheels --require-hashes -r /tmp/agent.lock",
)

# .ci/run runs the README's test command itself.
RUN_BY_CI = ("scripts/test",)


def all_commands() -> set[str]:
    return {
        *CHECKOUT,
        DUO_IN_CHECKOUT,
        *WHEEL_INSTALL,
        *AGENT_INSTALL,
        *AGENT_INSTALL_OFFLINE,
        *RUN_BY_CI,
    }


def for_test(command: str, paths: Mapping[str, str], python: str = "/usr/bin/python3") -> list[str]:
    """The argv of a documented command with the docs' paths replaced (longest first) and a leading `python3`
    replaced by `python` (Debian's interpreter, as on a fresh machine)."""
    if paths:  # all at once, so that a replacement is never replaced again
        pattern = "|".join(re.escape(doc_path) for doc_path in sorted(paths, key=len, reverse=True))
        command = re.sub(pattern, lambda match: paths[match.group(0)], command)
    argv = shlex.split(command)
    if argv[0] == "python3":
        argv[0] = python
    return argv
