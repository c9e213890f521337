"""Pure domain types and rules. Standard library only."""
