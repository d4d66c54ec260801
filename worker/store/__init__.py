"""The database: engine, sessions and migrations, the tables, and every SQL statement the
other layers need, behind functions that run in the caller's transaction.

``db`` (engine, transaction scope, the schema's revision), ``models/`` (the tables),
``locking`` (one sync and one poll at a time per database), ``keys`` (what OpenRouter said
about each registered key), ``catalogue`` (every key of an account), ``ledger`` (runs and each
key's outcome), ``usage_write`` (the one write of usage rows, every driver-specific statement),
``snapshots`` (the live poll's), ``alerts`` (alert states and the outbox). The caller decides
what one unit of work is; nothing here opens or commits a transaction except ``db``.
"""
