"""What one controller process holds: settings, database, stores, writers. Built once in the lifespan."""

from __future__ import annotations

from dataclasses import dataclass, field

from teleops.chat.service import ChatService
from teleops.commands.approval import ApprovalDesk
from teleops.commands.backend.agent_hub import AgentHub
from teleops.commands.duo import DuoPushes
from teleops.config import Settings
from teleops.domain.clock import Clock
from teleops.oncall.service import OnCallService
from teleops.server.metrics import Metrics
from teleops.store.audit_checkpoints import CheckpointLog
from teleops.store.database import Database
from teleops.store.incident_events import IncidentEvents
from teleops.store.ingest import IngestWriter
from teleops.store.tokens import TokenStore
from teleops.store.twofactor import TwoFactorStore
from teleops.store.users import UserStore

__all__ = ["Services"]


@dataclass(slots=True)
class Services:
    settings: Settings
    clock: Clock
    db: Database
    tokens: TokenStore
    users: UserStore
    ingest: IngestWriter
    incident_events: IncidentEvents  # who hears of incident changes; act_on_incident takes it
    metrics: Metrics = field(default_factory=Metrics)
    hub: AgentHub | None = None  # set by the lifespan; routes answer 503 without it
    chat: ChatService | None = None  # gateways, outbox workers, notifier, conversation
    oncall: OnCallService | None = None  # escalation worker, handovers, Alertmanager silences
    stepup: TwoFactorStore | None = None  # TOTP step-up (commands whose rule has require_2fa)
    checkpoints: CheckpointLog | None = None  # the audit head anchored outside the database
    approvals: ApprovalDesk | None = None  # two-person approval; set with the hub
    duo: DuoPushes | None = None  # Duo push step-up (twofactor.duo); set with the hub
