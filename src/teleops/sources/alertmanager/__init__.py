"""Prometheus Alertmanager webhook source."""
