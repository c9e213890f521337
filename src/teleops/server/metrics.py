"""Prometheus metrics (`teleops_*`), one registry per app so tests can run many apps in one process."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from teleops.chat.input_watch import InputHealth, UnhandledInput
from teleops.domain.alert import Alert

__all__ = ["Metrics"]


class Metrics:
    def __init__(self) -> None:
        # Labelled children cached by label values: `.labels()` validates and locks on every call, which
        # showed in the ingest profile at thousands of requests per second.
        self._children: dict[tuple[Any, ...], Any] = {}
        self._outbox_platforms: set[str] = set()
        self.registry = CollectorRegistry(auto_describe=True)
        self.alerts_received = Counter(
            "teleops_alerts_received",
            "Alerts received and committed, by source and alert status.",
            ["source", "status"],
            registry=self.registry,
        )
        self.alerts_rejected = Counter(
            "teleops_alerts_rejected",
            "Alert requests refused, by source and HTTP status.",
            ["source", "code"],
            registry=self.registry,
        )
        self.incidents_open = Gauge("teleops_incidents_open", "Incidents not yet resolved.", registry=self.registry)
        self.request_latency = Histogram(
            "teleops_http_request_duration_seconds",
            "HTTP request latency by route template and method.",
            ["route", "method"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry,
        )
        self.render_fallback = Counter(
            "teleops_render_fallback",
            "Chat messages resent as plain text because the platform rejected their markup, by platform.",
            ["platform"],
            registry=self.registry,
        )
        self.agent_messages_rejected = Counter(
            "teleops_agent_messages_rejected",
            "Reports an agent sent about a command that was not sent to it (started, output, exit, refused), "
            "refused by the controller, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.chat_updates_unhandled = Counter(
            "teleops_chat_updates_unhandled",
            "Chat updates, events or messages a gateway could not parse or handle and skipped past (confirmed to the "
            "platform, logged, audited as chat.update_unhandled), by platform and reason.",
            ["platform", "reason"],
            registry=self.registry,
        )
        self.chat_input_silent = Gauge(
            "teleops_chat_input_silent_seconds",
            "Seconds since a chat gateway last completed a receive cycle (a getUpdates that returned, a live Socket "
            "Mode session); 0 where that cannot be watched (webhooks, Events API, the console).",
            ["platform"],
            registry=self.registry,
        )
        self.chat_input_stalled = Gauge(
            "teleops_chat_input_stalled",
            "1 while a chat gateway's input has been silent for longer than telegram.input_stall_after.",
            ["platform"],
            registry=self.registry,
        )

        # Work claimed under leases and commands handed between replicas (issue #23), read at each scrape.
        self.outbox_claims = Counter(
            "teleops_outbox_claims",
            "Outbox rows this replica claimed to deliver (taken), and outcomes refused because the claim had passed to "
            "another replica meanwhile (lost: a stalled or frozen replica's late word).",
            ["result"],
            registry=self.registry,
        )
        self.command_handovers = Counter(
            "teleops_command_handovers",
            "Commands and cancels handed to the replica an agent is connected to (out), and taken from other replicas "
            "for this replica's agents (in).",
            ["direction"],
            registry=self.registry,
        )
        self._seen_totals: dict[tuple[str, str], int] = {}
        # Singleton loops under fenced leases (server/singletons.py, store/leases.py; issue #23).
        self.singleton_held = Gauge(
            "teleops_singleton_held",
            "1 while this replica holds the singleton's lease (runs the loop), 0 while it stands by.",
            ["singleton"],
            registry=self.registry,
        )
        self.singleton_acquisitions = Counter(
            "teleops_singleton_acquisitions",
            "Singleton leases this replica acquired (each with a new fencing epoch).",
            ["singleton"],
            registry=self.registry,
        )
        self.singleton_failovers = Counter(
            "teleops_singleton_failovers",
            "Singleton leases this replica took over from another replica (its holder died, froze, or stopped).",
            ["singleton"],
            registry=self.registry,
        )
        self.singleton_losses = Counter(
            "teleops_singleton_losses",
            "Singleton leases this replica lost, by reason (expired: a renewal or fenced action found it expired "
            "or taken over; storage: the database did not answer a renewal).",
            ["singleton", "reason"],
            registry=self.registry,
        )

        # Ingest rate limits (server/ingest_limits.py): refusals, and which tokens are throttled now.
        self.ingest_throttled = Counter(
            "teleops_ingest_throttled",
            "Alert requests answered 429 because their ingest token was over its rate limit, by source and token.",
            ["source", "token"],
            registry=self.registry,
        )
        self.ingest_throttling = Gauge(
            "teleops_ingest_throttling",
            "1 while an ingest token is throttled on a source (its IngestThrottled incident is open), else 0.",
            ["source", "token"],
            registry=self.registry,
        )

        self.deliveries = Counter(
            "teleops_deliveries",
            "Outbox rows that reached their end, by platform and result (delivered: the platform took it; refused: "
            "it never will, the reason is on the row).",
            ["platform", "result"],
            registry=self.registry,
        )
        self.pages = Counter(
            "teleops_pages",
            "Pages by the state they reached (queued, delivered, sent, failed) and platform.",
            ["state", "platform"],
            registry=self.registry,
        )
        self.page_failures = Counter(
            "teleops_page_failures",
            "Pages that failed, by platform and cause (refused, token_rejected, deadline).",
            ["platform", "cause"],
            registry=self.registry,
        )
        self.platform_token_rejected = Gauge(
            "teleops_platform_token_rejected",
            "1 while the platform rejects TeleOps' own token (nothing goes through it until the config is fixed).",
            ["platform"],
            registry=self.registry,
        )
        # Issue #18 (server/webhook_doors.py): Slack Events API bodies read before their signature can be checked.
        self.slack_unverified_bodies = Gauge(
            "teleops_slack_unverified_bodies",
            "Slack Events API request bodies being read before their signature could be checked (at most 8; more "
            "are answered 503 at once).",
            registry=self.registry,
        )
        self.outbox_depth = Gauge(
            "teleops_outbox_depth",
            "Outbox rows not yet delivered or failed, by platform.",
            ["platform"],
            registry=self.registry,
        )
        self.outbox_oldest_age = Gauge(
            "teleops_outbox_oldest_age_seconds",
            "Age of the oldest outbox row not yet delivered or failed, by platform (0 when none).",
            ["platform"],
            registry=self.registry,
        )
        self.escalation_steps = Counter(
            "teleops_escalation_steps",
            "Escalation steps run (each one pages someone), by team.",
            ["team"],
            registry=self.registry,
        )
        # Heartbeats in (server/heartbeats.py): pings received, and how many heartbeats are late now.
        self.heartbeat_pings = Counter(
            "teleops_heartbeat_pings",
            "Heartbeat pings received and recorded, by heartbeat name.",
            ["heartbeat"],
            registry=self.registry,
        )
        self.heartbeats_late = Gauge(
            "teleops_heartbeats_late",
            "Heartbeats missed (silent for longer than interval + grace) whose incident is open until their next ping.",
            registry=self.registry,
        )
        # Self-monitoring (server/selfwatch): the self-test and the pings of the external dead-man's switch.
        self.self_test_ok = Gauge(
            "teleops_self_test_ok",
            "1 when the last self-test passed every step (storage, ingest, outbox, each chat platform), else 0.",
            registry=self.registry,
        )
        self.self_test_failures = Counter(
            "teleops_self_test_failures",
            "Self-test steps that failed, by step (storage, ingest, outbox, or a chat platform's name).",
            ["step"],
            registry=self.registry,
        )
        self.self_test_last_success = Gauge(
            "teleops_self_test_last_success_timestamp_seconds",
            "Unix time of the last self-test that passed every step (0: none yet in this process).",
            registry=self.registry,
        )
        self.deadman_pings = Counter(
            "teleops_deadman_pings",
            "Dead-man's-switch pings, by result: ok (ping_url answered 2xx), fail (fail_url told why), skipped "
            "(unhealthy or not yet tested, no fail_url), error (the request failed or was not answered 2xx), standby "
            "(another replica holds the deadman-pinger lease and pings).",
            ["result"],
            registry=self.registry,
        )

    def count_delivery(self, platform: str, result: str) -> None:
        self._child(self.deliveries, platform, result).inc()

    def count_page(self, state: str, platform: str, cause: str) -> None:
        self._child(self.pages, state, platform).inc()
        if cause:
            self._child(self.page_failures, platform, cause).inc()

    def observe_outbox(self, depth: dict[str, tuple[int, float]]) -> None:
        """`depth`: platform -> (rows waiting, age of the oldest in seconds); platforms seen before and now empty
        go to 0."""
        for platform in {*depth, *self._outbox_platforms}:
            count, age = depth.get(platform, (0, 0.0))
            self._child(self.outbox_depth, platform).set(count)
            self._child(self.outbox_oldest_age, platform).set(age)
        self._outbox_platforms.update(depth)

    def count_throttled(self, source: str, token: str) -> None:
        """One request refused with 429 by the ingest rate limit (also in teleops_alerts_rejected_total)."""
        self._child(self.ingest_throttled, source, token).inc()
        self._child(self.alerts_rejected, source, "429").inc()

    def set_throttling(self, source: str, token: str, *, on: bool) -> None:
        self._child(self.ingest_throttling, source, token).set(1.0 if on else 0.0)

    def count_ping(self, heartbeat: str) -> None:
        """One recorded heartbeat ping, in `teleops_heartbeat_pings_total{heartbeat}`."""
        self._child(self.heartbeat_pings, heartbeat).inc()

    def count_self_test_failure(self, step: str) -> None:
        self._child(self.self_test_failures, step).inc()

    def count_deadman_ping(self, result: str) -> None:
        self._child(self.deadman_pings, result).inc()

    def count_unhandled(self, item: UnhandledInput) -> None:
        """One chat delivery a gateway skipped, in `teleops_chat_updates_unhandled_total{platform,reason}`."""
        self._child(self.chat_updates_unhandled, item.platform, item.reason.value).inc()

    def observe_totals(self, *, claims_taken: int, claims_lost: int, handed_out: int, handed_in: int) -> None:
        """Bring the claim and hand-over counters up to the running totals the store and the routing keep."""
        for name, counter, label, total in (
            ("claims", self.outbox_claims, "taken", claims_taken),
            ("claims", self.outbox_claims, "lost", claims_lost),
            ("handovers", self.command_handovers, "out", handed_out),
            ("handovers", self.command_handovers, "in", handed_in),
        ):
            key = (name, label)
            delta = total - self._seen_totals.get(key, 0)
            if delta > 0:
                self._child(counter, label).inc(delta)
                self._seen_totals[key] = total

    def observe_inputs(self, healths: Sequence[InputHealth]) -> None:
        """Each gateway's input: seconds since its last successful receive, and whether that counts as stalled."""
        for health in healths:
            self._child(self.chat_input_silent, health.platform).set(health.silent_s if health.watched else 0.0)
            self._child(self.chat_input_stalled, health.platform).set(1.0 if health.stalled else 0.0)

    def count_received(self, source: str, alerts: Sequence[Alert]) -> None:
        """Add committed alerts to `teleops_alerts_received_total`, one increment per (source, status)."""
        by_status: dict[str, int] = {}
        for alert in alerts:
            status = alert.status.value
            by_status[status] = by_status.get(status, 0) + 1
        for status, count in by_status.items():
            self._child(self.alerts_received, source, status).inc(count)

    def observe_latency(self, route: str, method: str, seconds: float) -> None:
        """One request's latency under its route template (never a raw path: paths may carry ids or secrets)."""
        self._child(self.request_latency, route, method).observe(seconds)

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child
