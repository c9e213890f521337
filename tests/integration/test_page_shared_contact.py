"""An escalation step can page a shared contact method (`notify: contact:NAME`, issue #20.2): the team's mailbox,
through Apprise, to a real local SMTP server."""

from __future__ import annotations

from pathlib import Path

import pytest

from teleops.config import Settings
from tests.conftest import Api, FakeClock
from tests.fakes.telegram import FakeTelegram
from tests.integration.test_contact_methods import SmtpSink, smtp  # noqa: F401 - fixture
from tests.integration.test_page_fallback import events, fire
from tests.scenarios.conftest import eventually
from tests.settings import settings_with

ALICE_TG = 1001


@pytest.fixture
def settings(tmp_path: Path, db_url: str, fake_telegram: FakeTelegram, smtp: SmtpSink) -> Settings:  # noqa: F811
    return settings_with(
        data_dir=tmp_path / "data",
        database={"url": db_url},
        local_agent={"enabled": False},
        telegram={"token": fake_telegram.token, "base_url": fake_telegram.base_url, "poll_timeout": "1s"},
        users=[{"name": "alice", "role": "operator", "telegram_id": ALICE_TG}],
        oncall={
            "escalation": [{"after": "0m", "notify": "user:alice"}, {"after": "10m", "notify": "contact:ops-mail"}],
            "contacts": [{"name": "ops-mail", "url": smtp.url}],
        },
    )


async def test_an_escalation_step_can_page_a_shared_contact(
    api: Api,
    fake_telegram: FakeTelegram,
    smtp: SmtpSink,  # noqa: F811
    clock: FakeClock,
) -> None:
    incident_id = await fire(api)
    await eventually(lambda: events(api, incident_id, "page.delivered"), what="alice's Telegram page")
    assert smtp.messages == []
    clock.advance(minutes=10)
    await api.services.oncall.worker.tick()
    await eventually(lambda: smtp.messages, what="the page in the team's mailbox")
    sent = await eventually(lambda: events(api, incident_id, "page.sent"), what="the mail page marked sent")
    assert sent[0]["chat"] == "ops-mail"
