"""The Dockerfile's build stage, run as the image would run it (issue #21): its COPY lines into a fresh /src, its RUN
lines one by one with /opt/teleops and /src under a temporary directory; then the image's command (`teleops serve`
with the image's ENV) answers its own HEALTHCHECK. No container daemon runs here, so the image itself is not built;
everything the image does with Python is."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path

from tests.install_commands import for_test
from tests.integration.first_start import start_serving
from tests.integration.servers import stop_process

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"


def _stage(text: str, index: int) -> list[tuple[str, str]]:
    """(instruction, argument) of the `index`-th stage, with continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", text)
    stages: list[list[tuple[str, str]]] = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, argument = line.partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        stages[-1].append((instruction.upper(), argument.strip()))
    return stages[index]


def test_the_build_stage_installs_from_the_lock_and_the_image_command_passes_its_healthcheck(tmp_path: Path) -> None:
    text = DOCKERFILE.read_text()
    build = _stage(text, 0)
    src, opt = tmp_path / "src", tmp_path / "opt-teleops"
    src.mkdir()
    paths = {"/opt/teleops": str(opt), "/src": str(src)}
    for instruction, argument in build:
        if instruction == "COPY":
            *sources, _dest = shlex.split(argument)
            for source in sources:
                origin = ROOT / source.rstrip("/")
                target = src / source.rstrip("/")
                if origin.is_dir():
                    shutil.copytree(origin, target, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    shutil.copy2(origin, target)
        elif instruction == "RUN":
            # --no-cache-dir only keeps the image small; the pip cache spares the test a second download.
            command = argument.replace(" --no-cache-dir", "")
            argv = for_test(command, paths)
            if argv[0] == "python":
                argv[0] = "/usr/bin/python3"  # the image's python:3.11: this machine's Debian 3.11
            done = subprocess.run(argv, cwd=src, capture_output=True, text=True, timeout=900, check=False)
            assert done.returncode == 0, f"RUN {argument}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    assert (opt / "bin" / "teleops").is_file()

    final = _stage(text, 1)
    env: dict[str, str] = {}
    for instruction, argument in final:
        if instruction == "ENV":
            env.update(dict(item.split("=", 1) for item in shlex.split(argument)))
    healthcheck = next(argument for instruction, argument in final if instruction == "HEALTHCHECK")
    probe = json.loads(healthcheck.split(" CMD ", 1)[1])
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    # The image's own settings, but on a free loopback port (start_serving) and a data dir of the test's.
    image_env = {k: v for k, v in env.items() if k.startswith("TELEOPS_") and k != "TELEOPS_SERVER__LISTEN"}
    config = tmp_path / "teleops.yaml"  # what compose mounts at /etc/teleops/teleops.yaml
    config.write_text("server: {public_url: ''}\n")
    image_env.update({"TELEOPS_DATA_DIR": str(data), "TELEOPS_CONFIG": str(config)})
    run = start_serving(
        [str(opt / "bin" / "teleops"), "serve"], cwd=tmp_path, log=tmp_path / "serve.log", env=image_env
    )
    try:
        port = run.url.rsplit(":", 1)[1]
        check = [str(opt / "bin" / probe[0]), *[a.replace("8080", port) for a in probe[1:]]]
        deadline = time.monotonic() + 60
        while True:
            ok = subprocess.run(check, capture_output=True, timeout=30, check=False).returncode == 0
            if ok or time.monotonic() > deadline or run.process.poll() is not None:
                break
            time.sleep(0.5)
        assert ok, (tmp_path / "serve.log").read_text()[-3000:]
    finally:
        stop_process(run.process)
