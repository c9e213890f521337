"""Settings declared once, validated at startup; a bad key stops TeleOps naming the key (exit 78)."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from teleops.config.contacts import ContactSettings, ContactsSettings, contact_book, contact_problems
from teleops.config.duration import Duration, DurationSetting, parse_duration
from teleops.config.heartbeats import HeartbeatsList
from teleops.config.ingest import IngestSettings
from teleops.config.oncall import OncallSettings
from teleops.config.self_check import SelfCheckSettings
from teleops.domain.policy import Policy, PolicyError, compile_policy
from teleops.domain.redaction import SecretRules

__all__ = ["ConfigError", "Settings", "find_config_file", "load_settings", "parse_duration"]

DEFAULT_CONFIG_NAME = "teleops.yaml"
# Marks a whole-settings error whose message starts with its own dotted key (see _describe).
_KEYED = "key="
# People who exist without a `users:` entry: `admin`, created by the first `teleops serve`
# (teleops.server.bootstrap.ADMIN; config must not import the server). See _oncall_names_exist.
BUILTIN_USERS = frozenset({"admin"})
# Telegram service accounts that must never be principals (docs/threat-model.md T05): the anonymous group admin,
# the Telegram service notifications account, and the channel-post relay bot.
TELEGRAM_PSEUDO_USERS = frozenset({1087968824, 777000, 136817688})


class ConfigError(Exception):
    """The configuration is unusable. The message names the key and says what to do."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServerSettings(_Section):
    listen: str = "127.0.0.1:8080"
    public_url: str = ""
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    # Web console sessions (server/session.py): end after this long without a request, and this long after login.
    session_idle: DurationSetting = Field("30m", validate_default=True)
    session_lifetime: DurationSetting = Field("12h", validate_default=True)
    # The HTTP front door (server/front_door.py, server/header_deadline.py): request headers must arrive within
    # header_timeout of the connection (or of the request's first byte), a body within body_timeout of its
    # headers; at most max_connections at once (agents' WebSockets count too); an idle keep-alive connection is
    # closed after keepalive_timeout.
    header_timeout: DurationSetting = Field("10s", validate_default=True)
    body_timeout: DurationSetting = Field("30s", validate_default=True)
    max_connections: int = Field(default=4096, ge=16)
    keepalive_timeout: DurationSetting = Field("5s", validate_default=True)

    @field_validator("header_timeout", "body_timeout", "keepalive_timeout")
    @classmethod
    def _front_door_duration(cls, value: Duration) -> Duration:
        if not 1 <= value.seconds <= 3600:
            raise ValueError(f"{value.text!r} is out of range; use between 1s and 1h, e.g. 30s")
        return value

    @field_validator("session_idle", "session_lifetime")
    @classmethod
    def _session_duration(cls, value: Duration) -> Duration:
        if value.seconds < 60:
            raise ValueError(f"{value.text!r} is too short for a web session; use at least 1m, e.g. 30m or 12h")
        return value

    @field_validator("listen")
    @classmethod
    def _listen_is_host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"{value!r} is not HOST:PORT, e.g. 127.0.0.1:8080")
        return value

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    def base_url(self) -> str:
        return self.public_url.rstrip("/") or f"http://{self.listen}"


class DatabaseSettings(_Section):
    url: str = "sqlite+aiosqlite:///./teleops-data/teleops.db"
    busy_timeout_ms: int = Field(default=5000, ge=0)
    # Replicas on one PostgreSQL: a singleton loop (Telegram polling, housekeeping, the dead-man's-switch pings) is
    # taken over this long after its holder died or froze; renewed every third of it (store/leases.py).
    singleton_lease_ttl: DurationSetting = Field("10s", validate_default=True)
    # Replicas on one PostgreSQL: a claim on a work row (an outbox message being sent, a missed heartbeat being
    # opened) is handed over this long after its replica died or froze (store/work_leases.py). The outbox worker
    # renews the claims of messages in flight every third of it; a heartbeat check is not renewed (it takes ms).
    work_lease: DurationSetting = Field("10s", validate_default=True)

    @field_validator("singleton_lease_ttl", "work_lease")
    @classmethod
    def _lease_in_range(cls, value: Duration) -> Duration:
        if not 3 <= value.seconds <= 300:
            raise ValueError("must be between 3s and 5m (a hand-over after a replica dies takes up to this long)")
        return value

    @field_validator("url")
    @classmethod
    def _supported_driver(cls, value: str) -> str:
        if not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError("use sqlite+aiosqlite:///PATH or postgresql+asyncpg://USER:PASS@HOST/DB")
        return value


class LocalAgentSettings(_Section):
    enabled: bool = True
    name: str = "localhost"
    policy_file: str | None = None
    # When TeleOps runs as root, the embedded agent's commands run as this user, which must not be able to read
    # the data directory (server/local_agent_user.py). Not root: the agent is refused unless allow_data_access.
    run_as: str = Field(default="nobody", min_length=1, max_length=32, pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*\$?$")
    allow_data_access: bool = False  # accept that commands on this machine can read TeleOps' data (a trial only)


class SshSettings(_Section):
    """How to reach an agentless host over SSH. The host key must already be in `known_hosts`."""

    address: str = Field(min_length=1, description="HOST or HOST:PORT")
    user: str = Field(min_length=1)
    key_file: Path
    known_hosts: Path


class HostSettings(_Section):
    """A host without an agent, reached over SSH (`hosts: [{name, ssh: {...}}]`)."""

    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    labels: dict[str, str] = Field(default_factory=dict)
    ssh: SshSettings


class AgentsSettings(_Section):
    """How the controller treats agents and the commands it sends them."""

    # Agents ping this often; three missed pings count as offline
    heartbeat: DurationSetting = Field("10s", validate_default=True)
    # Grace after a command's timeout (and the agent's last sign of life) before `lost`
    lost_after: DurationSetting = Field("60s", validate_default=True)
    default_timeout: DurationSetting = Field("60s", validate_default=True)
    max_timeout: DurationSetting = Field("1h", validate_default=True)
    output_cap_bytes: int = Field(default=64 * 1024, ge=1024, le=1024 * 1024)

    @field_validator("heartbeat", "lost_after", "default_timeout", "max_timeout")
    @classmethod
    def _is_duration(cls, value: Duration) -> Duration:
        if value.seconds <= 0:
            raise ValueError("must be longer than 0s")
        return value


class TelegramSettings(_Section):
    token: SecretStr | None = None
    base_url: str | None = None
    mode: Literal["polling", "webhook"] = "polling"
    webhook_secret: SecretStr | None = None
    allowed_chats: list[int] = Field(default_factory=list)
    alert_chats: list[int] = Field(default_factory=list)
    base_file_url: str | None = None
    # Older messages are not executed after an outage; the sender is asked to resend
    max_update_age: DurationSetting = Field("5m", validate_default=True)
    # Alert storms, on every platform (the console too) and for escalation pages: per chat and per (route, severity),
    # `storm_threshold` messages in a `storm_window`, then one summary message edited as more arrive.
    storm_threshold: int = Field(default=10, ge=1)
    storm_window: DurationSetting = Field("1m", validate_default=True)
    poll_timeout: DurationSetting = Field("25s", validate_default=True)  # getUpdates long-poll duration
    # Like max_update_age, for every platform: a chat input (Telegram polling, Slack Socket Mode) with no successful
    # receive for longer than this is a problem in /readyz and a notice in the other platforms' alert chats.
    input_stall_after: DurationSetting = Field("5m", validate_default=True)

    @field_validator("max_update_age", "poll_timeout", "storm_window", "input_stall_after")
    @classmethod
    def _telegram_duration(cls, value: Duration) -> Duration:
        if value.seconds <= 0:
            raise ValueError(f"{value.text!r} must be a positive duration like 5m")
        return value


class SlackSettings(_Section):
    mode: Literal["socket", "events"] = "socket"
    bot_token: SecretStr | None = None
    app_token: SecretStr | None = None
    signing_secret: SecretStr | None = None
    base_url: str | None = None  # Web API base, e.g. "https://slack.example/api/" (tests: a fake on loopback)
    alert_channels: list[str] = Field(default_factory=list)
    allowed_channels: list[str] = Field(default_factory=list)  # served besides alert_channels; the bot leaves others
    team_id: str | None = None  # the workspace served; events and people from any other team are refused


class UserSettings(_Section):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    role: str = "operator"
    telegram_id: int | None = None
    slack_id: str | None = None
    matrix_id: str | None = None
    twofactor: Literal["totp", "duo"] | None = None  # how this person steps up; None: twofactor.method
    # Ways to reach this person beyond chat (Apprise URLs), tried in this order after chat (docs/contact-methods.md).
    contacts: list[ContactSettings] = Field(default_factory=list)

    @field_validator("telegram_id")
    @classmethod
    def _not_a_pseudo_user(cls, value: int | None) -> int | None:
        if value is not None and value in TELEGRAM_PSEUDO_USERS:
            raise ValueError(f"{value} is a Telegram service account, not a person; it can never be a user")
        return value


class PolicyRule(_Section):
    hosts: list[str] = Field(min_length=1)
    commands: list[str] = Field(min_length=1)
    effect: Literal["allow", "deny"] = "allow"
    # Absent (None): a second factor before any command that can change a host (teleops.domain.policy, step-up).
    require_2fa: bool | None = None
    require_approval: bool = False
    shell: bool = False
    max_timeout: str | None = None


class PolicySettings(_Section):
    """No roles configured means the built-in default policy (teleops.domain.policy.DEFAULT_ROLES)."""

    roles: dict[str, list[PolicyRule]] = Field(default_factory=dict)

    def compile(self) -> Policy:
        """The checked policy. Raises PolicyError naming the bad key (an empty pattern, a bad glob, …)."""
        raw = {role: [rule.model_dump() for rule in rules] for role, rules in self.roles.items()}
        return compile_policy(raw, parse_duration=parse_duration)


class RedactionSettings(_Section):
    """Secrets masked in command output and command lines (store/sealed_argv.py): regular expressions, plus exact
    values (and their encodings)."""

    patterns: list[str] = Field(default_factory=list)
    secrets: list[SecretStr] = Field(default_factory=list)

    @field_validator("patterns")
    @classmethod
    def _patterns_compile(cls, value: list[str]) -> list[str]:
        for index, pattern in enumerate(value):
            try:
                compiled = re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"pattern {index} ({pattern!r}) is not a regular expression: {exc}") from exc
            if compiled.match(""):
                raise ValueError(f"pattern {index} ({pattern!r}) matches the empty string; it would mask nothing")
        return value


class DuoSettings(_Section):
    """Duo push step-up through Duo's Auth API (the `duo` extra): an "Auth API" application's keys and host."""

    ikey: str = Field(min_length=1)  # integration key
    skey: SecretStr  # secret key: signs every request (HMAC); never logged
    api_host: str = Field(min_length=1, pattern=r"^[A-Za-z0-9.-]+(:[0-9]{1,5})?$")  # HOST or HOST:PORT
    # Per request to Duo; longer, or no answer, counts as "unreachable"
    timeout: DurationSetting = Field("10s", validate_default=True)
    push_timeout: DurationSetting = Field("60s", validate_default=True)  # how long the person has to answer the push
    ca_certs: Path | None = None  # a PEM CA bundle instead of the one duo_client ships (TLS proxy, tests)

    @field_validator("timeout", "push_timeout")
    @classmethod
    def _positive(cls, value: Duration) -> Duration:
        if value.seconds <= 0:
            raise ValueError(f"{value.text!r} must be a positive duration like 10s")
        return value


class TwoFactorSettings(_Section):
    """Step-up: TOTP codes or Duo push (`method`, per user `users[].twofactor`); how long one success elevates a
    person, and how many wrong codes lock them."""

    elevation: DurationSetting = Field("10m", validate_default=True)
    lockout_after: int = Field(default=5, ge=1, le=100)
    method: Literal["totp", "duo"] = "totp"
    duo: DuoSettings | None = None
    # Web sign-in (docs/web-ui.md): a TOTP code after the password for everyone enrolled; `required_for_commands`
    # also makes people enrol before using the UI when their role has a rule that asks for a code (they need one
    # for their commands anyway); `required`: everyone; `enrolled`: only those who chose to enrol.
    web_signin: Literal["enrolled", "required_for_commands", "required"] = "required_for_commands"
    # How long lockout_after failed passwords in a row lock a user's web sign-in
    web_lockout: DurationSetting = Field("15m", validate_default=True)

    @field_validator("elevation")
    @classmethod
    def _elevation_is_duration(cls, value: Duration) -> Duration:
        if value.seconds < 0:
            raise ValueError("must be 0s or longer")
        return value

    @field_validator("web_lockout")
    @classmethod
    def _web_lockout_is_duration(cls, value: Duration) -> Duration:
        if value.seconds <= 0:
            raise ValueError(f"{value.text!r} must be a positive duration like 15m")
        return value


class ApprovalSettings(_Section):
    """Two-person approval: how long a request waits, and how many other people must approve it."""

    ttl: DurationSetting = Field("15m", validate_default=True)
    approvers: int = Field(default=1, ge=1, le=5)

    @field_validator("ttl")
    @classmethod
    def _ttl_is_duration(cls, value: Duration) -> Duration:
        if value.seconds <= 0:
            raise ValueError(f"{value.text!r} must be a positive duration like 15m")
        return value


class RetentionSettings(_Section):
    """How long raw alert payloads are kept (store/retention.py): incidents, commands and the audit log stay."""

    # The middle reports of an incident resolved longer ago than this are deleted (its first and last stay).
    raw_alerts: DurationSetting = Field("14d", validate_default=True)
    every: DurationSetting = Field("1h", validate_default=True)  # how often the pruning pass runs

    @field_validator("raw_alerts", "every")
    @classmethod
    def _retention_duration(cls, value: Duration) -> Duration:
        if value.seconds <= 0:
            raise ValueError(f"{value.text!r} must be a positive duration like 14d")
        return value


class AuditSettings(_Section):
    """Where the audit chain is anchored beyond the data directory (docs/adr/0004-audit-witness.md)."""

    # The Unix socket of `teleops audit witness`, run as a user of its own; None: only the local checkpoint file.
    witness: Path | None = None


class MemorySettings(_Section):
    """Scenario memory: how far back "last time" looks, when a fix "didn't stick", where runbooks live."""

    # The alert back within this long after a fix: "fix didn't stick"
    fix_window: DurationSetting = Field("24h", validate_default=True)
    lookback: DurationSetting = Field("30d", validate_default=True)  # "4th time in 30 days"
    runbooks_dir: Path | None = None  # a folder of runbook YAML files, one per alert name (e.g. ./runbooks)
    # The role the first-response principal (teleops-firstresponse) acts under; None: no automatic diagnostics.
    first_response_role: str | None = None

    @field_validator("fix_window", "lookback")
    @classmethod
    def _memory_duration(cls, value: Duration) -> Duration:
        if value.seconds <= 0:
            raise ValueError(f"{value.text!r} must be a positive duration like 24h")
        return value


class Settings(BaseSettings):
    """Everything TeleOps reads at startup. Every key can be set as TELEOPS_SECTION__KEY."""

    model_config = SettingsConfigDict(
        env_prefix="TELEOPS_",
        env_nested_delimiter="__",
        extra="forbid",
        nested_model_default_partial_update=True,
    )

    data_dir: Path = Path("./teleops-data")
    server: ServerSettings = Field(default_factory=ServerSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    local_agent: LocalAgentSettings = Field(default_factory=LocalAgentSettings)
    agents: AgentsSettings = Field(default_factory=AgentsSettings)
    hosts: list[HostSettings] = Field(default_factory=list)
    telegram: TelegramSettings = Field(default_factory=TelegramSettings)
    slack: SlackSettings = Field(default_factory=SlackSettings)
    users: list[UserSettings] = Field(default_factory=list)
    policy: PolicySettings = Field(default_factory=PolicySettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)  # rate limits per ingest token (T28)
    redaction: RedactionSettings = Field(default_factory=RedactionSettings)
    twofactor: TwoFactorSettings = Field(default_factory=TwoFactorSettings)
    approval: ApprovalSettings = Field(default_factory=ApprovalSettings)
    oncall: OncallSettings = Field(default_factory=OncallSettings)
    memory: MemorySettings = Field(default_factory=MemorySettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    heartbeats: HeartbeatsList = Field(default_factory=list)  # jobs that must check in (config/heartbeats.py)
    contacts: ContactsSettings = Field(default_factory=ContactsSettings)  # delivery of contact methods
    self_check: SelfCheckSettings = Field(default_factory=SelfCheckSettings)  # dead-man's switch, self-test
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @model_validator(mode="after")
    def _policy_is_whole(self) -> Settings:
        # No partial policy: a bad rule, or a user whose role the policy does not define, stops the load.
        try:
            policy = self.policy.compile()
        except PolicyError as exc:
            raise ValueError(f"{_KEYED}{exc}") from exc
        for index, user in enumerate(self.users):
            if user.role not in policy.roles:
                defined = ", ".join(sorted(policy.roles)) or "none"
                raise ValueError(
                    f"{_KEYED}users.{index}.role: user {user.name!r} has role {user.role!r}, which the policy does "
                    f"not define (roles: {defined}); add it under policy.roles or fix the spelling"
                )
        return self

    @model_validator(mode="after")
    def _duo_configured_when_used(self) -> Settings:
        users = [u.name for u in self.users if u.twofactor == "duo"]
        if self.twofactor.duo is None and (self.twofactor.method == "duo" or users):
            who = "twofactor.method is duo" if self.twofactor.method == "duo" else f"users {', '.join(users)} use duo"
            raise ValueError(
                f"{_KEYED}twofactor.duo: {who} but twofactor.duo is missing; add ikey, skey and api_host of a Duo "
                "Auth API application (see docs/access-control.md) or use totp"
            )
        return self

    def twofactor_method(self, user: str) -> Literal["totp", "duo"]:
        """How `user` steps up: their `users[].twofactor`, else `twofactor.method`."""
        own = next((u.twofactor for u in self.users if u.name == user), None)
        return own or self.twofactor.method

    @model_validator(mode="after")
    def _first_response_role_exists(self) -> Settings:
        role = self.memory.first_response_role
        if role is not None and role not in self.policy.compile().roles:
            raise ValueError(
                f"{_KEYED}memory.first_response_role: role {role!r} is not defined under policy.roles; "
                "add it (with the read-only diagnostics it may run) or remove the key"
            )
        return self

    @model_validator(mode="after")
    def _oncall_names_exist(self) -> Settings:
        # Who is "defined": a person exists in the database only because `serve` syncs `users:` into it
        # (bootstrap.sync_configured_users) or, for `admin`, creates them on first start; no `teleops user`
        # command creates people, and a chat is linked (`/link CODE`) only to a person who already exists. So the
        # configured names plus `admin` are everyone who can ever be paged, and this check can be exact from the
        # config alone. (Someone removed from `users:` stays in the database but is refused here: put them back.)
        people = {user.name for user in self.users} | BUILTIN_USERS
        first = next(self.oncall.unknown_names(people), None)
        if first is not None:
            key, problem = first
            raise ValueError(f"{_KEYED}oncall.{key}: {problem}")
        return self

    @model_validator(mode="after")
    def _contacts_are_usable(self) -> Settings:
        # Every contact URL is parsed by Apprise now: a typo stops the start, not the first page at night.
        first = next(contact_problems(self.users, self.oncall.contacts), None)
        if first is not None:
            key, problem = first
            raise ValueError(f"{_KEYED}{key}: {problem}")
        return self

    def contact_urls(self) -> dict[str, SecretStr]:
        """Every contact method by key (`USER/NAME`, or `NAME` for `oncall.contacts`), a person's in their order."""
        return contact_book(self.users, self.oncall.contacts)

    def access_policy(self) -> Policy:
        """The compiled policy (already checked when these settings loaded)."""
        return self.policy.compile()

    def redaction_rules(self) -> SecretRules:
        """Redaction built-ins + `redaction.patterns`, and as known values `redaction.secrets` plus every chat
        token and signing secret configured here (so they never come back out through command output)."""
        return SecretRules.build(self.redaction.patterns, self.known_secrets())

    def known_secrets(self) -> list[str]:
        """`redaction.secrets` and every chat token and signing secret configured here, as plain values."""
        known = [s.get_secret_value() for s in self.redaction.secrets]
        for secret in (
            self.telegram.token,
            self.telegram.webhook_secret,
            self.slack.bot_token,
            self.slack.app_token,
            self.slack.signing_secret,
            self.twofactor.duo.skey if self.twofactor.duo is not None else None,
        ):
            if secret is not None:
                known.append(secret.get_secret_value())
        known.extend(url.get_secret_value() for url in self.contact_urls().values())  # they carry passwords
        return known

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The YAML file arrives as init kwargs (see load_settings); the environment wins over it.
        return (env_settings, init_settings)


def find_config_file(explicit: str | os.PathLike[str] | None) -> Path | None:
    """`--config`, else $TELEOPS_CONFIG, else ./teleops.yaml if it exists, else None (embedded default)."""
    if explicit:
        return Path(explicit)
    from_env = os.environ.get("TELEOPS_CONFIG")
    if from_env:
        return Path(from_env)
    local = Path(DEFAULT_CONFIG_NAME)
    return local if local.is_file() else None


def load_settings(path: Path | None) -> Settings:
    """Read and validate the settings. Raises ConfigError naming the first bad key."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}. Check the path.") from exc
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections (server:, database:, …)")
        data = loaded
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path)) from exc
    for rule in settings.access_policy().unguarded():
        # The trade-off is the operator's to make, but never silently (docs/access-control.md, step-up).
        logging.getLogger(__name__).warning(
            "policy %s can change hosts without a second factor (require_2fa: false); remove that line to ask "
            "for a one-time code before such commands",
            rule.describe(),
        )
    return settings


def _describe(exc: ValidationError, path: Path | None) -> str:
    where = str(path) if path else "environment"
    lines = []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"]) or "(top level)"
        message = error["msg"]
        if _KEYED in message:
            lines.append(f"{where}: {message.split(_KEYED, 1)[1]}")
            continue
        if error["type"] == "extra_forbidden":
            message = "unknown key; check its spelling against the config reference in the README"
        elif error["type"] == "missing":
            message = "required key is missing"
        lines.append(f"{where}: {key}: {message}")
    return "\n".join(lines)
