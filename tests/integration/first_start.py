"""Start `teleops serve` as a new user does (the embedded default in an empty directory, only the port moved
to a free one) and read what its first start gives: the ready banner with its tokens and its `curl`, from the 0600
`first-start-credentials.txt` in the data directory (stdout is not a terminal here, so only its path is printed)."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.integration.servers import free_port, wait_until

__all__ = ["Banner", "ServeRun", "fire_the_banner_curl", "start_serving"]


@dataclass
class Banner:
    ingest_token: str
    api_token: str
    curl: str  # the "Fire a test alert" command, exactly as printed (with its line continuations)


@dataclass
class ServeRun:
    process: subprocess.Popen[bytes]
    url: str
    log: Path
    data_dir: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = 180.0) -> None:
        """Until /readyz answers 200 (ServerFailed with the log's tail if the process exits first)."""
        wait_until(
            lambda: httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200,
            what="teleops serve /readyz",
            timeout=timeout,
            process=self.process,
            log=self.log,
        )

    def credentials(self) -> str:
        path = self.data_dir / "first-start-credentials.txt"
        return path.read_text() if path.is_file() else ""

    def banner(self) -> Banner:
        wait_until(lambda: "Then list incidents:" in self.credentials(), what="the first-start banner", log=self.log)
        text = self.credentials()
        ingest = re.search(r"Ingest token: (tlo_\S+)", text)
        api = re.search(r"API token   : (tlo_\S+)", text)
        curl = re.search(r"Fire a test alert:\n(.*?)\n  Then list incidents:", text, re.S)
        assert ingest, text
        assert api, text
        assert curl, text
        return Banner(ingest.group(1), api.group(1), curl.group(1).strip())


def start_serving(argv: Sequence[str], *, cwd: Path, log: Path, env: dict[str, str] | None = None) -> ServeRun:
    """Run `argv` (a `teleops serve` or `scripts/serve`) in `cwd` with TELEOPS_* cleared but for the listen
    address and public URL (a free loopback port); its stdout and stderr go to `log`."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    run_env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEOPS_", "PIP_", "VIRTUAL_ENV"))}
    run_env.update({"TELEOPS_SERVER__LISTEN": f"127.0.0.1:{port}", "TELEOPS_SERVER__PUBLIC_URL": url, **(env or {})})
    with log.open("ab") as out:
        process = subprocess.Popen(
            list(argv), cwd=cwd, env=run_env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
    data_dir = Path((env or {}).get("TELEOPS_DATA_DIR", "teleops-data"))
    return ServeRun(process=process, url=url, log=log, data_dir=data_dir if data_dir.is_absolute() else cwd / data_dir)


def fire_the_banner_curl(run: ServeRun, banner: Banner) -> list[dict[str, object]]:
    """Run the banner's curl with bash as a person pastes it; return the open incidents the API then lists."""
    fired = subprocess.run(
        ["bash", "-c", banner.curl + " --fail-with-body"], capture_output=True, text=True, timeout=30, check=False
    )
    assert fired.returncode == 0, fired.stderr
    listed = httpx.get(
        f"{run.url}/api/v1/incidents", headers={"Authorization": f"Bearer {banner.api_token}"}, timeout=10
    )
    listed.raise_for_status()
    items: list[dict[str, object]] = listed.json()["items"]
    return items
