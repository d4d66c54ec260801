"""Reading back what is stored: reports grouped in SQL and their formats, the status of
every key, and the live figures (today, month, runway) from the snapshots; no network.

``report`` (the grouped sums, exact money), ``formats`` (table, CSV, JSON), ``choices``
(``--by`` and ``--format``, without SQLAlchemy), ``status`` (each key's syncs), ``live``
(today, month to date, burn rate, runway, month-end projection).
"""
