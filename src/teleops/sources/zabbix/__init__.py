"""Zabbix webhook media type source."""
