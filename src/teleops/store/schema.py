"""Tables. Core, not ORM: hot paths (ingest) stay lean and every query is visible."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

__all__ = [
    "agent_connections",
    "agents",
    "alerts",
    "chat_refusals",
    "chat_updates",
    "command_relays",
    "commands",
    "console_messages",
    "heartbeats",
    "identities",
    "incidents",
    "link_codes",
    "metadata",
    "outbox",
    "pages",
    "server_keys",
    "timeline",
    "tokens",
    "users",
    "web_sessions",
]

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_name)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# SQLite has no 64-bit autoincrement type of its own; INTEGER PRIMARY KEY is its rowid.
Id = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Stored as naive UTC, always returned timezone-aware: SQLite keeps no zone, PostgreSQL does."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use datetime.now(UTC)")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


incidents = Table(
    "incidents",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("source", String(32), nullable=False),
    Column("fingerprint", String(255), nullable=False),
    Column("status", String(16), nullable=False),
    Column("name", String(255), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("host", String(255)),
    Column("summary", Text, nullable=False, default=""),
    Column("description", Text, nullable=False, default=""),
    Column("labels", JSON, nullable=False),
    Column("annotations", JSON, nullable=False),
    Column("url", Text),
    Column("count", Integer, nullable=False, default=1),
    Column("digest", String(64), nullable=False),
    Column("starts_at", UTCDateTime),
    Column("created_at", UTCDateTime, nullable=False),
    Column("last_seen_at", UTCDateTime, nullable=False),
    Column("acknowledged_at", UTCDateTime),
    Column("acknowledged_by", String(255)),
    Column("snoozed_until", UTCDateTime),
    Column("resolved_at", UTCDateTime),
    Column("resolved_by", String(255)),
    Column("predecessor_id", Id, ForeignKey("incidents.id")),
    # One open incident per (source, fingerprint): the database enforces it, across replicas too.
    Index(
        "uq_incidents_open_fingerprint",
        "source",
        "fingerprint",
        unique=True,
        sqlite_where=text("resolved_at IS NULL"),
        postgresql_where=text("resolved_at IS NULL"),
    ),
    Index("ix_incidents_status_id", "status", "id"),
    Index("ix_incidents_source_fingerprint_id", "source", "fingerprint", "id"),
    # 0006 (scenario memory): newest-first recurrence lookups by name, and by name on one host (0008 dropped the
    # (name, host) index this one starts with).
    Index("ix_incidents_name_id", "name", "id"),
    Index("ix_incidents_name_host_id", "name", "host", "id"),
)

# Each real change an alert sender reported (fired, updated, resolved): the raw history of a scenario.
alerts = Table(
    "alerts",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("incident_id", Id, ForeignKey("incidents.id"), nullable=False, index=True),
    Column("status", String(16), nullable=False),
    Column("received_at", UTCDateTime, nullable=False),
    Column("alert", JSON, nullable=False),
)

timeline = Table(
    "timeline_events",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("incident_id", Id, ForeignKey("incidents.id"), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("actor", String(255)),
    Column("data", JSON, nullable=False),
    Index("ix_timeline_events_incident_id_id", "incident_id", "id"),
)

users = Table(
    "users",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("role", String(64), nullable=False),
    Column("password_hash", String(255)),
    Column("created_at", UTCDateTime, nullable=False),
)

tokens = Table(
    "tokens",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("kind", String(16), nullable=False),
    Column("name", String(128), nullable=False),
    Column("user_name", String(64)),
    # SHA-256 of the secret; the secret itself is shown once and never stored.
    Column("secret_hash", String(64), nullable=False, unique=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime),
    UniqueConstraint("kind", "name"),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("platform", String(32), nullable=False),
    Column("chat_id", String(255), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("incident_id", Id, ForeignKey("incidents.id")),
    Column("payload", JSON, nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UTCDateTime, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("sent_at", UTCDateTime),
    Column("platform_message_id", String(255)),
    Column("last_error", Text),
    # Added in 0003 (chat): the row this one edits or replies to, and why it exists (incident, storm, …).
    Column("ref_id", Id),
    Column("purpose", String(16)),
    # Added in 0010: the platform's retry_after deadline (429); the chat gets nothing before it, even after a restart.
    Column("blocked_until", UTCDateTime),
    # Added in 0017 (replicas): who claimed the row for delivery, until when (the database's clock), and the claim's
    # epoch, which every claim moves on and the write of the outcome must name (store/work_leases.py).
    Column("claimed_by", String(255)),
    Column("lease_until", UTCDateTime),
    Column("claim_epoch", Integer, nullable=False, default=0, server_default="0"),
    Index("ix_outbox_status_next_attempt_at", "status", "next_attempt_at"),
    Index("ix_outbox_platform_status_chat_id", "platform", "status", "chat_id", "id"),
    Index("ix_outbox_platform_chat_id_platform_message_id", "platform", "chat_id", "platform_message_id"),
    Index("ix_outbox_ref_id", "ref_id"),
    Index("ix_outbox_incident_id", "incident_id"),
)

agents = Table(
    "agents",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("hostname", String(255), nullable=False),
    Column("version", String(32), nullable=False),
    Column("labels", JSON, nullable=False),
    Column("allowlist_digest", String(64), nullable=False, default=""),
    Column("online", Boolean, nullable=False, default=False),
    Column("connected_at", UTCDateTime),
    Column("last_seen_at", UTCDateTime),
    # What host resolution uses: bound at the first connection, changed by an admin (migration 0009).
    Column("bound_hostname", String(255)),
    Column("bound_host", String(255)),
    Column("claim_conflict", String(1024)),
)

commands = Table(
    "commands",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("requester", String(64), nullable=False),
    Column("host", String(255), nullable=False),
    Column("agent_name", String(128), nullable=False),
    Column("argv", JSON, nullable=False),
    Column("status", String(16), nullable=False),
    Column("timeout_s", Integer, nullable=False),
    Column("incident_id", Id, ForeignKey("incidents.id")),
    Column("exit_code", Integer),
    Column("signal", Integer),
    Column("output", Text, nullable=False, default=""),
    Column("output_bytes", BigInteger, nullable=False, default=0),
    Column("truncated", Boolean, nullable=False, default=False),
    Column("reason", Text),
    Column("created_at", UTCDateTime, nullable=False),
    Column("dispatched_at", UTCDateTime),
    Column("started_at", UTCDateTime),
    Column("finished_at", UTCDateTime),
    # The original argv of a command whose stored `argv` was redacted, sealed (store/sealed_argv.py); NULL once
    # it was dispatched or ended.
    Column("sealed_argv", Text),
    Index("ix_commands_status", "status"),
    Index("ix_commands_incident_id", "incident_id"),
)

# Which controller replica each agent's WebSocket is connected to, on PostgreSQL with several replicas
# (store/agent_connections.py): refreshed by that replica every few seconds, so a dead replica's rows go stale.
agent_connections = Table(
    "agent_connections",
    metadata,
    Column("agent_name", String(128), primary_key=True),
    Column("replica", String(255), nullable=False),
    Column("connected_at", UTCDateTime, nullable=False),
    Column("refreshed_at", UTCDateTime, nullable=False),
    Index("ix_agent_connections_replica", "replica"),
)

# Execs and cancels one replica hands to the replica its command's agent is connected to (store/command_relays.py):
# a row lives from the hand-over until the receiving replica takes it.
command_relays = Table(
    "command_relays",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("command_id", Id, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("replica", String(255), nullable=False),
    Column("origin", String(255), nullable=False),
    Column("sealed_argv", Text),
    Column("output_cap_bytes", Integer),
    # HMAC under a key outside the database (commands/backend/routing.py): a database writer cannot forge one
    Column("tag", String(80)),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_command_relays_replica", "replica"),
)

# Secrets the controller generates once and shares across replicas (e.g. the web session signing key).
server_keys = Table(
    "server_keys",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", String(255), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

# Web console logins (store/web_sessions.py): the session cookie names a row; no live row, no session.
web_sessions = Table(
    "web_sessions",
    metadata,
    Column("id", String(64), primary_key=True),  # SHA-256 of the cookie's session id, never the id itself
    Column("user_id", Id, ForeignKey("users.id"), nullable=False),
    Column("role", String(64), nullable=False),  # the user's role at login: another role ends the session
    Column("created_at", UTCDateTime, nullable=False),
    Column("last_seen_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime),
    Column("revoked_reason", String(64)),
    Index("ix_web_sessions_user_id", "user_id"),
)

# The web console's chat history: what TeleOps posted there (delivered by the outbox) and what people typed.
console_messages = Table(
    "console_messages",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("author", String(64)),  # None: TeleOps itself; else the logged-in user who typed it
    Column("incident_id", Id, ForeignKey("incidents.id")),
    Column("reply_to", Id),
    Column("body", JSON, nullable=False),
)

# A person's chat accounts: (platform, the platform's immutable user id) -> user. Never a display name.
identities = Table(
    "identities",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("platform", String(32), nullable=False),
    Column("external_id", String(255), nullable=False),
    Column("user_name", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("via", String(64), nullable=False),
    UniqueConstraint("platform", "external_id"),
)

# One-time codes printed by `teleops user invite NAME`; only the SHA-256 is stored.
link_codes = Table(
    "link_codes",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("user_name", String(64), nullable=False),
    Column("code_hash", String(64), nullable=False, unique=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("used_at", UTCDateTime),
)

# Inbound chat deliveries already handled: the same update twice runs once (docs/threat-model.md T03, F09).
chat_updates = Table(
    "chat_updates",
    metadata,
    Column("platform", String(32), primary_key=True),
    Column("update_id", String(128), primary_key=True),
    Column("received_at", UTCDateTime, nullable=False),
)

# Unlinked chat users already told "you are not linked": they get that refusal once, then silence.
chat_refusals = Table(
    "chat_refusals",
    metadata,
    Column("platform", String(32), primary_key=True),
    Column("external_id", String(255), primary_key=True),
    Column("chat_id", String(255), nullable=False),
    Column("first_at", UTCDateTime, nullable=False),
    Column("count", Integer, nullable=False, default=1),
)

# One row per incident under escalation (oncall/escalation.py decides, oncall/worker.py acts).
escalations = Table(
    "escalations",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("incident_id", Id, ForeignKey("incidents.id"), nullable=False, unique=True),
    Column("team", String(64), nullable=False),
    Column("state", String(16), nullable=False),
    Column("step", Integer, nullable=False),
    Column("round", Integer, nullable=False),
    Column("round_started_at", UTCDateTime, nullable=False),
    Column("due_at", UTCDateTime),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_escalations_due_at", "due_at"),
)

# Added in 0014: every page is a delivery with a deadline (issue #20): queued -> delivered (a chat platform accepted
# it) or sent (handed to a mail server or webhook) or failed, with the reason. A failed page goes to the person's
# next contact method and moves the escalation on at once (oncall/delivery.py).
pages = Table(
    "pages",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("incident_id", Id, ForeignKey("incidents.id"), nullable=False),
    Column("escalation_id", Id),
    Column("step", Integer, nullable=False),  # 1-based step of the escalation that sent it
    Column("round", Integer, nullable=False),
    Column("target", String(160), nullable=False),  # the step's target: rotation:, user:, chat:, contact:
    Column("user_name", String(64)),  # whom it is for (None: a shared chat or contact)
    Column("method", Integer, nullable=False),  # 0: the person's chats; n: their n-th contact method
    Column("platform", String(32), nullable=False),
    Column("chat_id", String(255), nullable=False),
    Column("outbox_id", Id, nullable=False),
    Column("state", String(16), nullable=False),
    Column("reason", Text),
    Column("created_at", UTCDateTime, nullable=False),
    Column("deadline_at", UTCDateTime, nullable=False),
    Column("settled_at", UTCDateTime),
    Index("ix_pages_state_deadline_at", "state", "deadline_at"),
    Index("ix_pages_incident_id_step", "incident_id", "step", "round"),
)

# Heartbeats in (store/heartbeats.py, server/heartbeats.py): jobs that must ping every `interval`. `interval` and
# `grace` are kept as written ("5m"); `late_since` is set once per miss, when its incident was opened.
heartbeats = Table(
    "heartbeats",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("origin", String(16), nullable=False),  # "config" (teleops.yaml) or "api" (PUT /api/v1/heartbeats)
    Column("interval", String(32), nullable=False),
    Column("grace", String(32), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("labels", JSON, nullable=False),
    Column("description", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("last_ping_at", UTCDateTime),
    Column("late_since", UTCDateTime),
    # Added in 0017 (replicas): the replica checking a miss of this heartbeat now, and until when (its lease), so one
    # miss opens one incident however many replicas watch it (server/heartbeats.py).
    Column("check_claimed_by", String(255)),
    Column("check_lease_until", UTCDateTime),
)
