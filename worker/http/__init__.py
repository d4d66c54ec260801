"""The daemon's HTTP face, served beside the scheduler by ``openrouter-watcher run``.

- ``GET /metrics``: Prometheus text format, no token (:mod:`worker.http.metrics`);
- ``GET /healthz``: 200 or 503 with the reasons, no token (:mod:`worker.http.health`);
- ``GET /api/v1/usage``, ``/status``, ``/account-keys``, ``/alerts``: read-only JSON for a
  bearer token, which sees its own user's keys and accounts only unless the user is an admin
  (:mod:`worker.http.api`, :mod:`worker.http.auth`);
- ``GET /``: the dashboard, a page that asks for a token once and shows server-rendered
  panels with inline SVG charts (:mod:`worker.http.dashboard`).

:mod:`worker.http.app` assembles the Starlette application and :mod:`worker.http.server` runs
it on uvicorn in a thread. Every figure comes from the modules the command line uses
(:mod:`worker.report`, :mod:`worker.status`, :mod:`worker.live.figures`,
:mod:`worker.store.catalogue`, :mod:`worker.store.alerts`, :mod:`worker.render`), never a
second copy.
"""
