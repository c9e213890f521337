"""The agent's spool: accepted command ids and unacknowledged results survive a restart (a new Spool)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from teleops.agent.spool import Spool
from teleops.wire import Exit


def test_a_remembered_id_is_seen_after_a_restart(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.remember("41")
    spool.close()
    assert Spool(tmp_path).seen("41")
    assert not Spool(tmp_path).seen("42")


def test_noted_is_seen_at_once_but_survives_a_restart_only_once_persisted(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.note_seen("7")
    assert spool.seen("7")
    assert not Spool(tmp_path).seen("7")
    spool.persist_seen("7")
    assert Spool(tmp_path).seen("7")
    spool.close()


def test_persisting_from_many_threads_keeps_every_id_and_compacts_to_the_newest(tmp_path: Path) -> None:
    spool = Spool(tmp_path, remember=50)
    ids = [str(n) for n in range(400)]
    for command_id in ids:
        spool.note_seen(command_id)
    threads = [threading.Thread(target=spool.persist_seen, args=(command_id,)) for command_id in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    spool.close()
    reloaded = Spool(tmp_path, remember=50)
    assert reloaded.seen("399")
    assert not reloaded.seen("0")
    lines = (tmp_path / "seen").read_text().splitlines()
    assert set(lines) <= set(ids)  # no line torn by concurrent appends (an id may appear twice: harmless)


def test_ids_persisted_at_once_share_fsyncs_and_each_returns_only_once_on_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A burst of commands (B8: 100 at once) used to wait for 100 fsyncs in a row before the last could start."""
    real_fsync = os.fsync
    synced_upto: list[int] = []
    spool = Spool(tmp_path)
    everyone_appended = threading.Event()

    def slow_fsync(descriptor: int) -> None:
        # A slow disk: the first fsync lasts until every other caller has appended its id.
        assert everyone_appended.wait(timeout=30)
        real_fsync(descriptor)
        synced_upto.append(len((tmp_path / "seen").read_text().splitlines()))

    monkeypatch.setattr(os, "fsync", slow_fsync)
    returned: dict[str, int] = {}

    def persist(command_id: str) -> None:
        spool.persist_seen(command_id)
        returned[command_id] = synced_upto[-1]  # lines on disk by the last fsync when this call returned

    ids = [str(n) for n in range(50)]
    threads = [threading.Thread(target=persist, args=(command_id,)) for command_id in ids]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 30
    while spool._appended < len(ids) and time.monotonic() < deadline:
        time.sleep(0.001)  # polling the callers' shared state, not waiting out a guess
    everyone_appended.set()
    for thread in threads:
        thread.join()
    spool.close()
    lines = (tmp_path / "seen").read_text().splitlines()
    assert sorted(lines) == sorted(ids)
    assert len(synced_upto) <= 2  # the first caller's fsync, then one for those that appended meanwhile
    for command_id, upto in returned.items():
        assert command_id in lines[:upto]  # its line was in the file when an fsync covering it finished


def test_results_stay_until_acknowledged_oldest_first(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.put(Exit(command_id="1", exit_code=0))
    spool.put(Exit(command_id="2", exit_code=3))
    assert [r.command_id for r in Spool(tmp_path).pending()] == ["1", "2"]
    spool.ack("1")
    assert [(r.command_id, r.exit_code) for r in Spool(tmp_path).pending()] == [("2", 3)]


def test_an_unreadable_result_is_moved_aside_not_fatal(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    (tmp_path / "results" / "9.json").write_text("{not json")
    assert spool.pending() == []
    assert (tmp_path / "results" / "9.bad").exists()
