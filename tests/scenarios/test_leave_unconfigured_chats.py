"""A chat removed from the config is left at the next start (issue #19.7): the bot does not stay in a group it no
longer serves. Real controller, fake Bot API driven by python-telegram-bot."""

from __future__ import annotations

from teleops.config import Settings
from teleops.domain.message import Message
from teleops.server.app import create_app
from teleops.store.audit import iter_events
from teleops.store.database import Database
from teleops.store.outbox_queue import enqueue_send
from tests.conftest import FakeClock
from tests.fakes.telegram import FakeTelegram
from tests.scenarios.conftest import ALERT_CHAT, eventually

REMOVED_GROUP = -777  # a group TeleOps posted to before it was taken out of allowed_chats and alert_chats
PERSON = 4242  # a private chat: never "left"


async def test_a_group_removed_from_the_config_is_left_at_start_and_audited(
    settings: Settings, clock: FakeClock, fake_telegram: FakeTelegram
) -> None:
    db = Database(settings.database.url)
    await db.migrate()
    payload = {"message": Message(body="earlier").to_json()}
    for chat_id in (REMOVED_GROUP, PERSON, ALERT_CHAT):
        await db.run_in_transaction(
            lambda conn, c=chat_id: enqueue_send(
                conn, platform="telegram", chat_id=str(c), payload=payload, now=clock()
            )
        )
    await db.close()

    app = create_app(settings, clock=clock)
    async with app.router.lifespan_context(app):
        calls = await eventually(lambda: fake_telegram.calls_of("leaveChat"), what="leaveChat")
        assert [str(call.params["chat_id"]) for call in calls] == [str(REMOVED_GROUP)]
        events = await app.state.services.db.run_in_transaction(lambda conn: list(iter_events(conn)))
    left = [e for e in events if e.action == "chat.left"]
    assert [e.subject for e in left] == [f"telegram:{REMOVED_GROUP}"]
    assert left[0].data["reason"] == "no longer in the configured chats"
