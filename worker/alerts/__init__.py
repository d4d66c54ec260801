"""Alerts: the rules evaluated after every live poll, each alert fired once per period,
what the notification says, and its delivery through Apprise from an outbox.

``evaluate`` (figures → fired alerts and their state), ``fired`` (what fired), ``messages``
(what a notification says), ``deliver`` (Apprise with bounded retries; the outbox drained
after every poll), ``digest`` (the daily summary), ``status`` (what ``alerts list`` shows). The
rules and channels themselves are configuration (:mod:`worker.config.rules`).
"""
