"""TeleOps: ChatOps for on-call engineers."""

__version__ = "0.1.0"
