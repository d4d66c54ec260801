"""Test doubles that ship with the package: the tests, `make demo` and `make bench` reuse them."""
