"""Chat: the gateway contract (`base.py`), one folder per platform, the outbox worker, rendering, the notifier,
the conversation (chat commands), input watching and storms (docs/architecture.md, "Packages: `src/teleops/`")."""
