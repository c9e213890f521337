"""Contact methods in the config (issue #20.2): every URL is checked by Apprise at load time, a bad one stops the load
naming the contact (`alice/email`) and the URL's scheme only, never the URL (it carries passwords and tokens)."""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import pytest
import yaml

from teleops.config import ConfigError, load_settings
from teleops.domain.duration import Duration

PASSWORD = "hunter2-very-secret"  # a test value that must never come back out
EMAIL = f"mailtos://alerts:{PASSWORD}@smtp.example.com?from=teleops@example.com&to=alice@example.com"
NTFY = "ntfys://ntfy.example.com/alice-pages-7f3a9c"
OPS_MAIL = f"mailto://ops:{PASSWORD}@mail.example.com?from=teleops@example.com&to=ops@example.com"

CONFIG: dict[str, Any] = {
    "users": [
        {
            "name": "alice",
            "telegram_id": 1001,
            "contacts": [{"name": "email", "url": EMAIL}, {"name": "phone", "url": NTFY}],
        },
        {"name": "bob", "telegram_id": 1002},
    ],
    "oncall": {
        "contacts": [{"name": "ops-mail", "url": OPS_MAIL}],
        "escalation": [{"after": "0m", "notify": "user:alice"}, {"after": "10m", "notify": "contact:ops-mail"}],
    },
}


def write(tmp_path: Path, config: dict[str, Any]) -> Path:
    path = tmp_path / "teleops.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def failure(tmp_path: Path, config: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, config))
    return str(caught.value)


def test_contacts_load_in_order_by_key(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, CONFIG))
    urls = settings.contact_urls()
    assert list(urls) == ["alice/email", "alice/phone", "ops-mail"]
    assert urls["alice/email"].get_secret_value() == EMAIL
    assert settings.oncall.escalation[1].notify == "contact:ops-mail"
    assert settings.contacts.notify_timeout == Duration("30s")


def test_urls_never_appear_in_repr_or_dump(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, CONFIG))
    shown = repr(settings) + str(settings) + str(settings.model_dump()) + settings.model_dump_json()
    assert PASSWORD not in shown
    assert "ntfy.example.com/alice-pages" not in shown


def test_contact_urls_are_redacted_from_command_output(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, CONFIG))
    assert EMAIL in settings.known_secrets()


def test_unknown_scheme_names_the_contact_and_scheme_only(tmp_path: Path) -> None:
    config = copy.deepcopy(CONFIG)
    config["users"][0]["contacts"][1]["url"] = f"smoke-signal://alice:{PASSWORD}@hill.example.com"
    message = failure(tmp_path, config)
    assert "users.0.contacts.1.url" in message
    assert "contact alice/phone" in message
    assert "smoke-signal://" in message
    assert "does not know the scheme" in message
    assert PASSWORD not in message
    assert "hill.example.com" not in message


def test_malformed_url_of_a_known_scheme_says_what_to_fix(tmp_path: Path) -> None:
    config = copy.deepcopy(CONFIG)
    config["users"][0]["contacts"][0]["url"] = f"mailto://alerts:{PASSWORD}@"  # no host, no addresses
    message = failure(tmp_path, config)
    assert "users.0.contacts.0.url: contact alice/email: Apprise cannot use this mailto:// URL" in message
    assert "docs/contact-methods.md" in message
    assert PASSWORD not in message


def test_url_without_scheme_is_refused(tmp_path: Path) -> None:
    config = copy.deepcopy(CONFIG)
    config["oncall"]["contacts"][0]["url"] = "ops@example.com"
    message = failure(tmp_path, config)
    assert "oncall.contacts.0.url: contact ops-mail: the url has no scheme" in message


def test_duplicate_contact_name_of_one_person_is_refused(tmp_path: Path) -> None:
    config = copy.deepcopy(CONFIG)
    config["users"][0]["contacts"][1]["name"] = "email"
    message = failure(tmp_path, config)
    assert "users.0.contacts.1.name: contact alice/email is defined twice" in message


def test_two_people_may_use_the_same_contact_name(tmp_path: Path) -> None:
    config = copy.deepcopy(CONFIG)
    config["users"][1]["contacts"] = [{"name": "email", "url": OPS_MAIL}]
    assert "bob/email" in load_settings(write(tmp_path, config)).contact_urls()


def test_duplicate_shared_contact_name_is_refused(tmp_path: Path) -> None:
    config = copy.deepcopy(CONFIG)
    config["oncall"]["contacts"].append({"name": "ops-mail", "url": NTFY})
    assert "oncall.contacts.1.name: contact ops-mail is defined twice" in failure(tmp_path, config)


def test_contact_name_with_a_slash_is_refused(tmp_path: Path) -> None:
    config = copy.deepcopy(CONFIG)
    config["users"][0]["contacts"][0]["name"] = "mail/work"
    assert "users.0.contacts.0.name" in failure(tmp_path, config)


def test_escalation_step_naming_an_unknown_contact_is_refused(tmp_path: Path) -> None:
    config = copy.deepcopy(CONFIG)
    config["oncall"]["escalation"][1]["notify"] = "contact:ops-mial"
    message = failure(tmp_path, config)
    assert "oncall.escalation.1.notify: 'ops-mial' is not a defined contact (did you mean 'ops-mail'?)" in message
    assert "define it under oncall.contacts" in message


def test_a_persons_contact_is_not_a_shared_step_target(tmp_path: Path) -> None:
    config = copy.deepcopy(CONFIG)
    config["oncall"]["escalation"][1]["notify"] = "contact:email"
    assert "'email' is not a defined contact" in failure(tmp_path, config)


def test_notify_timeout_out_of_range_is_refused(tmp_path: Path) -> None:
    config = copy.deepcopy(CONFIG)
    config["contacts"] = {"notify_timeout": "0s"}
    assert "contacts.notify_timeout" in failure(tmp_path, config)


def test_loading_logs_no_url(tmp_path: Path) -> None:
    """What reaches the process's log handlers (on the root logger, where TeleOps' logging writes) while contacts
    load, good and bad, at DEBUG: nothing of any URL (Apprise prints each URL it loads, tokens in paths unmasked)."""
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    root = logging.getLogger()
    handler, level = Keep(logging.DEBUG), root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        load_settings(write(tmp_path, CONFIG))
        config = copy.deepcopy(CONFIG)
        config["users"][0]["contacts"][0]["url"] = f"mailto://alerts:{PASSWORD}@"
        failure(tmp_path, config)
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    text = "\n".join(lines)
    assert PASSWORD not in text
    assert "alice-pages-7f3a9c" not in text
