"""Contact methods beyond chat (email, push, SMS/voice gateways, webhooks) through Apprise: the only place that
imports it at run time (config/contacts.py checks URLs with it at load time)."""

from teleops.chat.contact.gateway import CONTACT_PLATFORM, ContactGateway, contact_capabilities

__all__ = ["CONTACT_PLATFORM", "ContactGateway", "contact_capabilities"]
