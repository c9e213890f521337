"""Two `teleops serve` replicas on one PostgreSQL with the fake Telegram Bot API: the Telegram poller is a singleton.

Each replica reaches the fake through its own loopback proxy, which counts the getUpdates requests it carries, so
the test sees which replica polls. Every inbound message is a `/whoami` from its own private chat, answered with
one message naming its sender: how many answers were queued (outbox rows) and delivered (the fake's chat) says how
often each message was handled.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
from collections.abc import Coroutine, Iterator
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from sqlalchemy import func, select

from teleops.store.database import Database
from teleops.store.schema import outbox
from tests.fakes.slack import FakeSlack, SlackMessage
from tests.integration.ping_receiver import PingReceiver
from tests.integration.servers import PostgresServer, TeleopsServer, eventually, start_teleops, stop_process
from tests.integration.tcp_proxy import TcpProxy
from tests.integration.test_telegram_commands_e2e import FakeInThread

T = TypeVar("T")
FAILOVER_BOUND_S = 15.0  # the bound for a singleton's failover
FIRST_CHAT = 7000
SLACK_CHANNEL = "C0ALERT"


class PollCountingProxy(TcpProxy):
    """One replica's way to the fake Bot API; `get_updates` counts the getUpdates requests it carried."""

    def __init__(self, target_port: int) -> None:
        super().__init__("127.0.0.1", target_port)
        self.get_updates = 0

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                self.get_updates += data.count(b"/getUpdates")
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.transport.abort()


class Cluster:
    """The fake Bot API, one database, and the replicas started on it (each with its own counting proxy)."""

    def __init__(self, tmp_path: Path, telegram: FakeInThread, database_url: str) -> None:
        self.tmp_path = tmp_path
        self.telegram = telegram
        self.database_url = database_url
        self.replicas: list[TeleopsServer] = []
        self.proxies: list[PollCountingProxy] = []
        self.chats = list(range(FIRST_CHAT, FIRST_CHAT + 60))
        self._next_chat = 0

    def start_replica(self) -> tuple[TeleopsServer, PollCountingProxy]:
        proxy = PollCountingProxy(self.telegram.fake.port)
        proxy.start()
        self.proxies.append(proxy)
        config: dict[str, Any] = {
            "telegram": {
                "token": self.telegram.fake.token,
                "base_url": f"{proxy.url}/bot",
                "mode": "polling",
                "poll_timeout": "1s",
                "input_stall_after": "3s",  # a standby's silence must not count as a stall
                "allowed_chats": self.chats,
            },
        }
        server = start_teleops(
            self.tmp_path / f"replica-{len(self.replicas)}",
            database_url=self.database_url,
            config=config,
            keys_from=self.replicas[0] if self.replicas else None,
        )
        self.replicas.append(server)
        return server, proxy

    def send_whoami(self, count: int) -> list[int]:
        """`count` messages, each `/whoami` from a new person in their private chat; returns their chat ids."""
        chats = self.chats[self._next_chat : self._next_chat + count]
        self._next_chat += count
        fake = self.telegram.fake
        for chat in chats:
            update = self.telegram.call(partial(fake.message_update, chat, chat, "/whoami"))
            self.telegram.call(partial(fake.push_update, update))
        return chats

    def answers_delivered(self, chat: int) -> int:
        return len(self.telegram.call(lambda: self.telegram.fake.chat_messages(chat)))

    def answers_queued(self) -> dict[int, int]:
        return asyncio.run(_answers_queued(self.database_url))

    def all_answered(self, chats: list[int]) -> bool:
        """Every chat's answer delivered and recorded as sent: no delivery is in flight."""
        sent = asyncio.run(_answers_queued(self.database_url, status="sent"))
        return all(sent.get(chat, 0) >= 1 and self.answers_delivered(chat) for chat in chats)

    def close(self) -> None:
        for server in self.replicas:
            with contextlib.suppress(ProcessLookupError):
                os.kill(server.process.pid, signal.SIGCONT)
            stop_process(server.process)
        for proxy in self.proxies:
            proxy.stop()


async def _answers_queued(url: str, *, status: str | None = None) -> dict[int, int]:
    db = Database(url)
    query = select(outbox.c.chat_id, func.count()).where(outbox.c.platform == "telegram")
    if status is not None:
        query = query.where(outbox.c.status == status)
    try:
        rows = await db.all(query.group_by(outbox.c.chat_id))
    finally:
        await db.close()
    return {int(chat): int(n) for chat, n in (tuple(row) for row in rows)}


@pytest.fixture
def telegram() -> Iterator[FakeInThread]:
    fake = FakeInThread()
    fake.run(fake.fake.start())
    yield fake
    fake.close()


@pytest.fixture
def cluster(tmp_path: Path, telegram: FakeInThread, postgres_server: PostgresServer) -> Iterator[Cluster]:
    url = postgres_server.create_database()
    running = Cluster(tmp_path, telegram, url)
    try:
        yield running
    finally:
        running.close()
        postgres_server.drop_database(url)


def singletons_of(server: TeleopsServer) -> dict[str, str]:
    body = httpx.get(f"{server.url}/readyz", timeout=5).json()
    singletons: dict[str, str] = body["singletons"]
    return singletons


def readiness(server: TeleopsServer) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{server.url}/readyz", timeout=5).json()
    return body


def metric(server: TeleopsServer, name: str, singleton: str) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=5).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and f'singleton="{singleton}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def first_poll_after(proxy: PollCountingProxy, since: float, *, polls_before: int) -> float:
    """Seconds from `since` (monotonic) until `proxy` carried a getUpdates it had not carried before."""
    eventually(lambda: proxy.get_updates > polls_before, what="the other replica to poll", timeout=30)
    return time.monotonic() - since


def assert_each_handled_once(cluster: Cluster, chats: list[int]) -> None:
    """Every message was answered (delivered) and handled once: one answer queued per message."""
    eventually(lambda: all(cluster.answers_delivered(chat) for chat in chats), what="an answer to every message")
    queued = cluster.answers_queued()
    assert {chat: queued.get(chat, 0) for chat in chats} == dict.fromkeys(chats, 1)


def test_kill_9_of_the_polling_replica_moves_polling_and_handles_every_message_once(cluster: Cluster) -> None:
    a, _ = cluster.start_replica()
    eventually(lambda: singletons_of(a)["telegram-poller"] == "held", what="replica A to poll")
    b, proxy_b = cluster.start_replica()
    b_started = time.monotonic()
    assert singletons_of(b)["telegram-poller"] == "standby"

    before = cluster.send_whoami(8)
    eventually(lambda: cluster.all_answered(before), what="answers sent before the kill")
    assert proxy_b.get_updates == 0  # the standby never polled
    time.sleep(max(0.0, 4.0 - (time.monotonic() - b_started)))  # past input_stall_after (3s) since B started
    standby = readiness(b)  # more than input_stall_after of silence, and that is no stall for a standby
    assert standby["status"] == "ready", standby
    assert standby["chat_inputs"]["telegram"]["watched"] is False
    assert "standby" in standby["chat_inputs"]["telegram"]["note"]

    during = cluster.send_whoami(8)
    polls_b = proxy_b.get_updates
    killed_at = time.monotonic()
    os.kill(a.process.pid, signal.SIGKILL)
    a.process.wait(10)
    after = cluster.send_whoami(8)  # sent while nobody polls
    failover_s = first_poll_after(proxy_b, killed_at, polls_before=polls_b)
    print(f"\nTelegram poller failover after kill -9: {failover_s:.2f} s")
    assert failover_s <= FAILOVER_BOUND_S
    assert singletons_of(b)["telegram-poller"] == "held"
    assert metric(b, "teleops_singleton_failovers_total", "telegram-poller") == 1
    assert readiness(b)["chat_inputs"]["telegram"]["watched"] is True  # now it polls, its input is watched

    later = cluster.send_whoami(8)
    # Handled once each. Delivered at least once: an answer the killed replica had sent but not yet marked sent is
    # sent again by the outbox (its at-least-once window: Telegram has no idempotency key), not by the poller.
    assert_each_handled_once(cluster, before + during + after + later)


def test_a_replica_frozen_past_its_lease_is_replaced_and_after_resuming_polls_and_answers_nothing(
    cluster: Cluster,
) -> None:
    a, proxy_a = cluster.start_replica()
    eventually(lambda: singletons_of(a)["telegram-poller"] == "held", what="replica A to poll")
    b, proxy_b = cluster.start_replica()
    first = cluster.send_whoami(5)
    # Nothing in flight when it freezes: a delivery caught between the platform's answer and its "sent" mark is
    # the outbox's at-least-once window (chat/outbox.py), not the poller's.
    eventually(lambda: cluster.all_answered(first), what="answers sent before the freeze")

    polls_b = proxy_b.get_updates
    frozen_at = time.monotonic()
    os.kill(a.process.pid, signal.SIGSTOP)
    while_frozen = cluster.send_whoami(5)
    failover_s = first_poll_after(proxy_b, frozen_at, polls_before=polls_b)
    print(f"\nTelegram poller failover after SIGSTOP: {failover_s:.2f} s")
    assert failover_s <= FAILOVER_BOUND_S
    eventually(lambda: all(cluster.answers_delivered(chat) for chat in while_frozen), what="B's answers")

    polls_a = proxy_a.get_updates
    log_before = len(a.log.read_bytes())
    os.kill(a.process.pid, signal.SIGCONT)
    eventually(lambda: singletons_of(a)["telegram-poller"] == "standby", what="the resumed replica to stand by")
    resumed = cluster.send_whoami(5)
    assert_each_handled_once(cluster, first + while_frozen + resumed)
    time.sleep(2)  # what the resumed replica would have polled or sent would show by now
    assert proxy_a.get_updates == polls_a  # it asked Telegram for nothing after it woke up
    # Its long poll was answered while it was frozen (with the first update sent meanwhile): that answer, read on
    # waking, failed the fence and was dropped, not handled (not even as a replay).
    woke = a.log.read_bytes()[log_before:].decode()
    assert "update_id=" not in woke, woke
    assert "singleton.lost" in woke
    duplicates = {c: n for c in first + while_frozen + resumed if (n := cluster.answers_delivered(c)) != 1}
    assert duplicates == {}
    assert singletons_of(b)["telegram-poller"] == "held"
    assert metric(a, "teleops_singleton_losses_total", "telegram-poller") >= 1
    assert metric(b, "teleops_singleton_failovers_total", "telegram-poller") == 1


class FakeSlackInThread:
    """The fake Slack (Web API and Socket Mode) on its own event loop, as FakeInThread is for Telegram."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.fake: FakeSlack = self.run(_new_fake_slack())

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=30)

    def answers(self, text: str) -> list[SlackMessage]:
        async def read() -> list[SlackMessage]:
            return [m for m in self.fake.channel_messages(SLACK_CHANNEL) if text in m.text]

        return self.run(read())

    def close(self) -> None:
        self.run(self.fake.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


async def _new_fake_slack() -> FakeSlack:
    fake = FakeSlack()
    await fake.start()
    return fake


@pytest.fixture
def slack() -> Iterator[FakeSlackInThread]:
    fake = FakeSlackInThread()
    yield fake
    fake.close()


@pytest.mark.parametrize("stop_signal", [signal.SIGKILL, signal.SIGSTOP], ids=["kill-9", "sigstop"])
def test_the_slack_socket_mode_session_moves_to_the_other_replica_and_each_envelope_is_handled_once(
    tmp_path: Path, slack: FakeSlackInThread, postgres_server: PostgresServer, stop_signal: signal.Signals
) -> None:
    url = postgres_server.create_database()
    config: dict[str, Any] = {
        "slack": {
            "mode": "socket",
            "bot_token": slack.fake.bot_token,
            "app_token": slack.fake.app_token,
            "base_url": slack.fake.base_url,
            "alert_channels": [SLACK_CHANNEL],
            "team_id": "T1",
        },
    }
    started: list[TeleopsServer] = []
    try:
        a = start_teleops(tmp_path / "a", database_url=url, config=config)
        started.append(a)
        eventually(lambda: slack.fake.connections == 1, what="replica A's Socket Mode session")
        b = start_teleops(tmp_path / "b", database_url=url, config=config, keys_from=a)
        started.append(b)
        assert singletons_of(a)["slack-socket"] == "held"
        assert singletons_of(b)["slack-socket"] == "standby"

        log_before = len(a.log.read_bytes())
        stopped_at = time.monotonic()
        os.kill(a.process.pid, stop_signal)
        eventually(lambda: slack.fake.connections == 2, what="replica B's Socket Mode session", timeout=30)
        failover_s = time.monotonic() - stopped_at
        print(f"\nSlack Socket Mode failover after {stop_signal.name}: {failover_s:.2f} s")
        assert failover_s <= FAILOVER_BOUND_S

        # The fake sends each envelope over every open session (Slack picks one): a frozen A still has its own.
        envelope = slack.run(
            slack.fake.push("slash_commands", slack.fake.command_payload(SLACK_CHANNEL, "U1", "whoami"))
        )
        eventually(lambda: slack.answers("You are slack user"), what="the /teleops whoami answer")
        if stop_signal is signal.SIGSTOP:
            os.kill(a.process.pid, signal.SIGCONT)
            eventually(lambda: singletons_of(a)["slack-socket"] == "standby", what="the resumed replica to stand by")
            woke = a.log.read_bytes()[log_before:].decode()
            assert "chat." not in woke, woke  # the envelope it read on waking failed the fence: not handled
        time.sleep(2)  # a second answer would show by now
        assert len(slack.answers("You are slack user")) == 1
        assert envelope in slack.fake.acks
        assert singletons_of(b)["slack-socket"] == "held"
    finally:
        for server in started:
            with contextlib.suppress(ProcessLookupError):
                os.kill(server.process.pid, signal.SIGCONT)
            stop_process(server.process)
        postgres_server.drop_database(url)


def test_only_the_lease_holder_pings_the_dead_mans_switch_and_a_resumed_one_pings_no_more(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    """Each replica pings its own path of one switch here, so the test sees who pings; in production they share
    one check URL."""
    url = postgres_server.create_database()
    started: list[TeleopsServer] = []

    def replica(name: str) -> TeleopsServer:
        checks = {"ping_url": switch.url(f"/ping/{name}"), "ping_every": "1s", "self_test_every": "1s"}
        server = start_teleops(
            tmp_path / name, database_url=url, config={"self_check": checks}, keys_from=started[0] if started else None
        )
        started.append(server)
        return server

    with PingReceiver() as switch:
        try:
            a = replica("a")
            eventually(lambda: len(switch.pings("/ping/a")) >= 2, what="replica A's pings")
            b = replica("b")
            time.sleep(3)  # B's pinger ticks three times meanwhile
            assert switch.pings("/ping/b") == []
            assert singletons_of(b)["deadman-pinger"] == "standby"

            stopped_at = time.monotonic()
            os.kill(a.process.pid, signal.SIGSTOP)
            eventually(lambda: switch.pings("/ping/b"), what="replica B's first ping", timeout=30)
            failover_s = switch.pings("/ping/b")[0].at - stopped_at
            print(f"\nDead-man's-switch pinger failover after SIGSTOP: {failover_s:.2f} s")
            assert failover_s <= FAILOVER_BOUND_S

            pings_a = len(switch.pings("/ping/a"))
            os.kill(a.process.pid, signal.SIGCONT)
            eventually(lambda: singletons_of(a)["deadman-pinger"] == "standby", what="the resumed replica to stand by")
            time.sleep(3)
            assert len(switch.pings("/ping/a")) == pings_a  # its overdue tick found the lease gone: no ping
            b_pings = len(switch.pings("/ping/b"))
            eventually(lambda: len(switch.pings("/ping/b")) > b_pings, what="B to keep pinging")
            assert metric(a, "teleops_singleton_losses_total", "deadman-pinger") >= 1
        finally:
            for server in started:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(server.process.pid, signal.SIGCONT)
                stop_process(server.process)
            postgres_server.drop_database(url)
