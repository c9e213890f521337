"""Building the chat side from settings: which gateways run, which chats they serve, who is who."""

from __future__ import annotations

from pydantic import SecretStr

from teleops.chat.desk import HeartbeatAnswers
from teleops.chat.service import ChatAccess, ChatCommands, ChatService
from teleops.chat.storm import storm_rule
from teleops.config import Settings
from teleops.domain.alert import Alert
from teleops.domain.clock import Clock
from teleops.memory.service import ScenarioMemory
from teleops.oncall.routing import route_team
from teleops.server.metrics import Metrics
from teleops.server.singletons import Singletons
from teleops.store.database import Database
from teleops.store.incident_events import IncidentEvents
from teleops.store.users import UserStore

__all__ = ["build_chat"]


def build_chat(
    settings: Settings,
    *,
    db: Database,
    events: IncidentEvents,
    users: UserStore,
    clock: Clock,
    metrics: Metrics,
    commands: ChatCommands,
    access: ChatAccess,
    memory: ScenarioMemory,
    heartbeats: HeartbeatAnswers,
    singletons: Singletons | None = None,
) -> ChatService:
    """A ChatService with every configured platform added (Telegram when `telegram.token` is set). With
    `singletons`, Telegram polling runs in the one replica holding its lease (server/singletons.py)."""
    telegram = settings.telegram
    configured = {("telegram", str(u.telegram_id)): u.name for u in settings.users if u.telegram_id is not None}
    configured.update({("slack", u.slack_id): u.name for u in settings.users if u.slack_id})
    chat = ChatService(
        db=db,
        events=events,
        users=users,
        clock=clock,
        commands=commands,
        access=access,
        memory=memory,
        heartbeats=heartbeats,
        configured_identities=configured,
        storm_threshold=telegram.storm_threshold,
        max_update_age=telegram.max_update_age.timedelta,
        on_fallback=lambda platform: metrics.render_fallback.labels(platform).inc(),
        input_stall_after=telegram.input_stall_after.timedelta,
        on_unhandled=metrics.count_unhandled,
        on_delivery=metrics.count_delivery,
    )
    routes = tuple(settings.oncall.routes)

    def route_of(alert: Alert) -> str:
        return route_team(routes, source=alert.source, severity=alert.severity.value, labels=alert.labels)[0]

    # Storms are grouped per chat and per (route, severity) on every platform.
    chat.notifier.use_storm_rule(storm_rule(settings), route_of)
    # A trimmed alert links its incident page only where people can reach it: never a guessed URL.
    chat.notifier.link_incident_pages(settings.server.public_url)
    if telegram.token is not None:
        from teleops.chat.telegram import TelegramGateway  # the SDK loads only when Telegram is configured

        secret = telegram.webhook_secret.get_secret_value() if telegram.webhook_secret else None
        gateway = TelegramGateway(
            telegram.token.get_secret_value(),
            allowed_chats=[*telegram.allowed_chats, *telegram.alert_chats],
            clock=clock,
            base_url=telegram.base_url,
            base_file_url=telegram.base_file_url,
            mode=telegram.mode,
            webhook_url=f"{settings.server.base_url()}/api/v1/chat/telegram/webhook",
            webhook_secret=secret,
            poll_timeout_s=int(telegram.poll_timeout.seconds),
            leases=singletons.leases if singletons is not None else None,
        )
        if singletons is not None and gateway.polls_as_singleton:
            from teleops.chat.telegram.gateway import POLLER

            singletons.add(POLLER, gateway.poll_while_held)
        chat.add_gateway(
            gateway,
            allowed_chats=[str(c) for c in telegram.allowed_chats],
            alert_chats=[str(c) for c in telegram.alert_chats],
        )
    if settings.slack.bot_token is not None:
        _add_slack(chat, settings, clock, singletons)
    contacts = settings.contact_urls()
    if contacts:
        _add_contacts(chat, settings, contacts, clock)
    return chat


def _add_contacts(chat: ChatService, settings: Settings, contacts: dict[str, SecretStr], clock: Clock) -> None:
    """Contact methods (email, push, SMS, webhooks) as one more platform with its own outbox worker: durable,
    retried and rate limited like a chat. No chats of its own: rows reach it by contact key (escalation pages)."""
    from teleops.chat.contact import ContactGateway  # Apprise loads only when a contact is configured

    section = settings.contacts
    gateway = ContactGateway(
        contacts,
        clock=clock,
        notify_timeout_s=section.notify_timeout.seconds,
        min_interval_s=section.min_interval.seconds,
        global_per_second=section.global_per_second,
    )
    chat.add_gateway(gateway, allowed_chats=[], alert_chats=[])


def _add_slack(chat: ChatService, settings: Settings, clock: Clock, singletons: Singletons | None) -> None:
    from teleops.chat.slack import SlackGateway  # the SDK loads only when Slack is configured
    from teleops.chat.slack.gateway import SOCKET

    slack = settings.slack
    assert slack.bot_token is not None
    gateway = SlackGateway(
        slack.bot_token.get_secret_value(),
        allowed_channels=[*slack.allowed_channels, *slack.alert_channels],
        clock=clock,
        mode=slack.mode,
        app_token=slack.app_token.get_secret_value() if slack.app_token else None,
        signing_secret=slack.signing_secret.get_secret_value() if slack.signing_secret else None,
        base_url=slack.base_url,
        team_id=slack.team_id,
        leases=singletons.leases if singletons is not None else None,
    )
    if singletons is not None and gateway.socket_as_singleton:
        singletons.add(SOCKET, gateway.socket_while_held)
    chat.add_gateway(gateway, allowed_chats=slack.allowed_channels, alert_chats=slack.alert_channels)
