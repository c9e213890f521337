"""The audit checkpoint file under a burst of dispatches: concurrent writers share fsyncs, the newest head is
always the last line, and every line verifies."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from teleops.store.audit_checkpoints import CheckpointLog


def test_writers_that_arrive_during_an_fsync_are_folded_into_the_next_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_fsync = os.fsync
    log = CheckpointLog(tmp_path)
    everyone_asked = threading.Event()

    def slow_fsync(fd: int) -> None:
        # A slow disk: the first fsync lasts until every other writer has asked for its head.
        assert everyone_asked.wait(timeout=30)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", slow_fsync)
    threads = [threading.Thread(target=log.write, args=(seq, f"{seq:064x}")) for seq in range(1, 21)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 30
    while (log._wanted is None or log._wanted[0] != 20) and time.monotonic() < deadline:
        time.sleep(0.001)  # polling the writers' shared state, not waiting out a guess
    everyone_asked.set()
    for thread in threads:
        thread.join()

    lines = log.read()  # raises if any line's HMAC does not verify
    assert lines[-1].seq == 20
    assert lines[-1].hash == f"{20:064x}"
    assert len(lines) <= 2  # the first writer's line, then one line for the others folded into it
    assert [c.seq for c in lines] == sorted(c.seq for c in lines)


def test_an_older_head_after_a_newer_one_writes_nothing(tmp_path: Path) -> None:
    log = CheckpointLog(tmp_path)
    assert log.write(5, "a" * 64)
    assert not log.write(3, "b" * 64)
    assert [(c.seq, c.hash) for c in log.read()] == [(5, "a" * 64)]
