"""Structured logs (structlog) to stderr: key=value for people, JSON when TELEOPS_LOG_JSON=1.

Every value of every line is redacted before it is rendered (issue #17): with the built-in secret shapes
(TeleOps' `tlo_…` tokens among them), or with the rules given (`teleops serve` gives its configured ones), so
a secret that reaches a log call by mistake — an argv, an error text, a URL — is masked there too.
"""

from __future__ import annotations

import functools
import logging
import os
import sys

import structlog

from teleops.domain.redaction import SecretRules, redact

__all__ = ["configure_logging", "redacting_processor", "use_log_redaction"]

# The rules every line is masked with; `use_log_redaction` replaces them once more are known (the agent learns its
# policy's after logging started; loggers already in use keep their processors, so the rules are looked up here).
_rules: list[SecretRules] = []


def use_log_redaction(rules: SecretRules) -> None:
    """Mask every later log line with `rules` (they include the built-ins: `SecretRules.build`)."""
    _rules[:] = [rules]
    _redacted.cache_clear()


_CACHED_UP_TO = 256  # characters: log values repeat (event names, hosts, users, argv words); longer ones vary


@functools.lru_cache(maxsize=8192)
def _redacted(value: str) -> str:
    """`redact` with the current rules, remembered: a log line has about ten values and `redact` runs every rule
    over each (~20 µs a value), which on the command path added up to milliseconds per command."""
    return redact(value, _rules[0])


def redacting_processor(rules: SecretRules) -> structlog.typing.Processor:
    """A structlog processor masking secrets in the event's values (strings, and inside lists, tuples, dicts) with
    `rules`, or the ones given to `use_log_redaction` since."""
    use_log_redaction(rules)

    def clean(value: object) -> object:
        if isinstance(value, str):
            return _redacted(value) if len(value) <= _CACHED_UP_TO else redact(value, _rules[0])
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        return value

    def process(_logger: object, _method: str, event: structlog.typing.EventDict) -> structlog.typing.EventDict:
        return {key: clean(value) for key, value in event.items()}

    return process


def configure_logging(level: str = "info", *, redaction: SecretRules | None = None) -> None:
    numeric = logging.getLevelName(level.upper())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if os.environ.get("TELEOPS_LOG_JSON") == "1"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redacting_processor(redaction if redaction is not None else SecretRules.build()),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(
        level=max(numeric, logging.WARNING), stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
