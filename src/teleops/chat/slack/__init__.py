"""Slack through slack-bolt and slack-sdk (the only package that imports them)."""

from teleops.chat.slack.gateway import SLACK_CAPABILITIES, SlackGateway

__all__ = ["SLACK_CAPABILITIES", "SlackGateway"]
