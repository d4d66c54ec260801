"""The live poll: what every account and key has spent today and this month, its limit and
balance, asked of OpenRouter every few minutes, stored when it changed, then the alerts.

``poll`` (one poll: ask OpenRouter, store what changed, evaluate the alerts, deliver). What
follows from the snapshots (today, runway, projections) is read back by
:mod:`worker.reports.live`; the daemon's poll job is :mod:`worker.daemon.jobs`.
"""
