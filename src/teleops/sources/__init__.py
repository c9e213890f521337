"""Alert sources: one folder per sender, each with a pure `parse`. See registry.py."""
