"""Grafana unified alerting webhook source."""
