"""Telegram through python-telegram-bot (the only package that imports `telegram`)."""

from teleops.chat.telegram.gateway import TELEGRAM_CAPABILITIES, TelegramGateway

__all__ = ["TELEGRAM_CAPABILITIES", "TelegramGateway"]
