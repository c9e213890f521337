"""The built-in web console: a chat platform served by the controller itself (no chat account needed)."""
