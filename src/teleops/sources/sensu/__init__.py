"""Sensu Go event source."""
