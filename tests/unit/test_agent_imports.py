"""`teleops agent` loads only what requirements/agent.lock installs: the CLI imports a command's module only when
that command runs, and the agent's modules import no controller package. (tests/integration/test_agent_install.py
proves it on a real install; this finds the offending import in a second.)"""

from __future__ import annotations

import json
import subprocess
import sys

CONTROLLER_ONLY = {
    "fastapi", "starlette", "uvicorn", "sqlalchemy", "alembic", "aiosqlite", "asyncpg", "jinja2", "httpx",
    "telegram", "slack_bolt", "slack_sdk", "aiohttp", "asyncssh", "pydantic_settings", "cryptography", "dotenv",
}  # fmt: skip

_PROBE = """
import json, sys
sys.argv = ["teleops", "agent", "--help"]
from teleops.cli import main
try:
    main()
except SystemExit:
    pass
import teleops.agent.main  # what `teleops agent` runs after parsing its options
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
"""


def test_teleops_agent_imports_no_controller_package() -> None:
    probe = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=60, check=True)
    loaded = set(json.loads(probe.stdout.strip().splitlines()[-1]))
    assert "teleops" in loaded
    assert not loaded & CONTROLLER_ONLY, sorted(loaded & CONTROLLER_ONLY)
