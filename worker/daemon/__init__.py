"""The long-running service, ``openrouter-watcher run``: the scheduler and its jobs (the
sync, the live poll), the HTTP face beside them, and the process's Prometheus counters.

``service`` (start, wait for the database, signals, stop; where the scheduler and the HTTP
server meet), ``jobs`` (the sync job and the poll job), ``metrics`` (the live counters),
``http/`` (metrics, health, the token API and the dashboard).
"""
