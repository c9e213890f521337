"""A fresh install, as a user does it from the README: the wheel built from this checkout installed with no
extras into a new virtual environment made by Debian's /usr/bin/python3, then `teleops serve` on the embedded
default. It reaches /readyz, the banner's `curl` opens an incident, and /docs renders in Chromium. A config
that turns on Duo (the only optional SDK) exits 78 with one line until the `duo` extra is installed.

The test suite's own environment (.venv/ from requirements/test.lock) has every extra; this one does not, so
an import of an optional package at start-up fails here, as it would for a user.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml
from playwright.sync_api import sync_playwright

from tests.install_commands import WHEEL_INSTALL, for_test
from tests.integration.first_start import fire_the_banner_curl, start_serving
from tests.integration.servers import stop_process
from tests.integration.test_api_docs_page import CHROMIUM, CHROMIUM_ARGS, check_docs_page, docs_page

ROOT = Path(__file__).resolve().parents[2]
DEBIAN_PYTHON = "/usr/bin/python3"


def _run(argv: list[str], *, cwd: Path = ROOT, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, f"{' '.join(argv)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """README "Install from a wheel", command by command: scripts/wheel, a venv, pip install of the wheel."""
    venv = tmp_path_factory.mktemp("fresh") / "teleops"
    build, make_venv, install, _duo = WHEEL_INSTALL
    built = _run(for_test(build, {}))
    assert built.stdout.strip().endswith("-py3-none-any.whl"), built.stdout
    _run(for_test(make_venv, {"/opt/teleops": str(venv)}, python=DEBIAN_PYTHON))
    _run(for_test(install, {"/opt/teleops": str(venv)}))
    return venv


def _installed(venv: Path) -> set[str]:
    listed = _run([str(venv / "bin" / "python"), "-m", "pip", "list", "--format=freeze"]).stdout
    return {re.sub(r"[-_.]+", "-", line.split("==")[0]).lower() for line in listed.splitlines()}


def test_the_base_install_has_the_chat_sdks_and_ssh_but_not_duo(wheel_venv: Path) -> None:
    installed = _installed(wheel_venv)
    assert {"python-telegram-bot", "slack-bolt", "slack-sdk", "asyncssh", "fastapi"} <= installed
    assert "duo-client" not in installed
    assert "pytest" not in installed


def test_serve_on_the_embedded_default_is_ready_takes_the_readme_curl_and_renders_docs(
    wheel_venv: Path, tmp_path: Path
) -> None:
    run = start_serving([str(wheel_venv / "bin" / "teleops"), "serve"], cwd=tmp_path, log=tmp_path / "serve.log")
    try:
        run.wait_ready()
        banner = run.banner()
        incidents = fire_the_banner_curl(run, banner)
        assert [item["summary"] for item in incidents] == ["Disk / is 97% full"]
        assert (tmp_path / "teleops-data" / "teleops.db").is_file()  # the embedded default's place
        with sync_playwright() as runner:
            browser = runner.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                with docs_page(browser, run.url) as (page, traffic):
                    check_docs_page(run.url, page, traffic)
            finally:
                browser.close()
    finally:
        stop_process(run.process)
    assert "Traceback" not in run.output()


def test_duo_configured_without_its_extra_exits_78_with_one_line_until_the_extra_is_installed(
    wheel_venv: Path, tmp_path: Path
) -> None:
    config = tmp_path / "teleops.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data_dir": str(tmp_path / "data"),
                "twofactor": {"method": "duo", "duo": {"ikey": "DIXXXX", "skey": "s" * 40, "api_host": "api.test"}},
            }
        )
    )
    teleops = str(wheel_venv / "bin" / "teleops")
    for command in (["config", "check"], ["serve"]):
        refused = subprocess.run(
            [teleops, *command, "--config", str(config)], capture_output=True, text=True, timeout=60, check=False
        )
        assert refused.returncode == 78, refused.stderr
        lines = refused.stderr.strip().splitlines()
        assert len(lines) == 1, refused.stderr
        assert "twofactor.duo" in lines[0]
        assert re.search(rf"{re.escape(str(wheel_venv))}/bin/python3? -m pip install 'duo_client>=5.3'", lines[0])

    duo = WHEEL_INSTALL[-1]
    _run(for_test(duo, {"/opt/teleops": str(wheel_venv)}))
    assert "duo-client" in _installed(wheel_venv)
    checked = _run([teleops, "config", "check", "--config", str(config)])
    assert "configuration OK" in checked.stdout
