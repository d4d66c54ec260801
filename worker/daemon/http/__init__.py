"""The daemon's HTTP face, served beside the scheduler by ``openrouter-watcher run``:
Prometheus metrics, the health probe, a token-scoped JSON API and the dashboard.

- ``GET /metrics``: Prometheus text format, no token (:mod:`~worker.daemon.http.metrics`);
- ``GET /healthz``: 200 or 503 with the reasons, no token (:mod:`~worker.daemon.http.health`);
- ``GET /api/v1/usage``, ``/status``, ``/account-keys``, ``/alerts``: read-only JSON for a
  bearer token, which sees its own user's keys and accounts only unless the user is an admin
  (:mod:`~worker.daemon.http.api`, :mod:`~worker.daemon.http.auth`);
- ``GET /``: the dashboard, a page that asks for a token once and shows server-rendered
  panels with inline SVG charts (:mod:`~worker.daemon.http.dashboard`).

``app`` assembles the Starlette application and ``server`` runs it on uvicorn in a thread.
Every figure comes from the modules the command line uses (:mod:`worker.reports`,
:mod:`worker.store`, :mod:`worker.core.render`), never a second copy.
"""
