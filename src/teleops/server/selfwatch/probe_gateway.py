"""The self-test's own chat platform: a `Gateway` that delivers into memory, so a probe message goes through the
real `OutboxWorker` (read heads, claim, wait for the fsync, call the gateway, mark sent) without reaching anyone."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from teleops.chat.base import Capabilities, EventHandler, Formatting, RateLimits, Rendered
from teleops.chat.input_watch import InputWatch

__all__ = ["ProbeGateway"]


class ProbeGateway:
    """Accepts every message; the ids it answers count up."""

    def __init__(self, platform: str, *, clock: Callable[[], datetime]) -> None:
        self._capabilities = Capabilities(
            platform=platform,
            formatting=Formatting.PLAIN,
            max_message_length=4096,
            buttons=False,
            max_button_data_bytes=0,
            replies=False,
            edits=False,
            files=False,
            max_file_bytes=0,
            rate_limits=RateLimits(
                per_chat_interval_s=0.0, per_group_per_minute=None, group_chat_prefix="", global_per_second=100.0
            ),
        )
        self._input = InputWatch(platform, clock=clock, mode="local", watched=False)
        self._sent = 0

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    @property
    def input_watch(self) -> InputWatch:
        return self._input

    async def start(self, on_event: EventHandler) -> None:
        return None  # nothing comes in

    async def stop(self) -> None:
        return None

    async def send(self, chat_id: str, message: Rendered, *, reply_to: str | None = None) -> str:
        self._sent += 1
        return str(self._sent)

    async def edit(self, chat_id: str, message_id: str, message: Rendered) -> None:
        return None

    async def send_file(
        self,
        chat_id: str,
        filename: str,
        content: bytes,
        *,
        caption: Rendered | None = None,
        reply_to: str | None = None,
    ) -> str:
        self._sent += 1
        return str(self._sent)

    async def answer_button(self, callback_id: str, text: str) -> None:
        return None

    async def leave(self, chat_id: str) -> bool:
        return False

    async def probe(self) -> str | None:
        return None
