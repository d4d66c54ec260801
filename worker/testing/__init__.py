"""Test doubles that ship with the package, reused by the tests, `make demo` and `make bench`:
the fake OpenRouter, a throw-away PostgreSQL, receivers for notifications, the layout check.
"""
