"""TeleOps' own small alert format."""
