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
    """Every part the routes use, built once in dependency order by the lifespan (server/app.py): none is optional
    but Duo, which only runs when `twofactor.duo` is configured."""

    settings: Settings
    clock: Clock
    db: Database
    tokens: TokenStore
    users: UserStore
    ingest: IngestWriter
    incident_events: IncidentEvents  # who hears of incident changes; act_on_incident takes it
    hub: AgentHub  # the agents' WebSockets: commands out, output back
    chat: ChatService  # gateways, outbox workers, notifier, conversation
    oncall: OnCallService  # escalation worker, handovers, Alertmanager silences
    stepup: TwoFactorStore  # TOTP step-up (commands whose rule has require_2fa), web sign-in codes
    checkpoints: CheckpointLog  # the audit head anchored outside the database
    approvals: ApprovalDesk  # two-person approval
    metrics: Metrics = field(default_factory=Metrics)
    duo: DuoPushes | None = None  # Duo push step-up, when twofactor.duo is configured
