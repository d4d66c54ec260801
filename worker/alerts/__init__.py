"""Alerts: rules and channels from the configuration, their evaluation after every live poll,
the state that keeps each alert to one notification, and delivery through Apprise.

``rules`` (the ``[[channels]]`` and ``[[alerts]]`` tables, validated), ``evaluate`` (figures →
fired alerts and their state), ``messages`` (what a notification says), ``deliver`` (Apprise
with bounded retries; the outbox drained after every poll), ``digest`` (the daily summary).
Kept free of imports here: the configuration loader imports ``rules`` on every command.
"""
