"""The SQL the sync needs, behind functions that run in the caller's transaction.

``keys`` (which keys to poll, what OpenRouter said about them), ``ledger`` (runs and each key's
outcome), ``usage_write`` (the one write of usage rows, with every driver-specific statement).
The sync decides what one unit of work is; nothing here opens or commits a transaction.
"""
