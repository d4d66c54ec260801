"""Hypothesis profiles for the property tests, chosen by ``HYPOTHESIS_PROFILE``.

``ci`` (the default, what ``make test`` runs) keeps the property tests to about 25 s on the
two-core machine: 60 examples on SQLite, half as many on PostgreSQL, each a sequence of up to
seven real syncs. ``fuzz`` (``make fuzz``) runs 2000 and 1000. No deadline per example: a
slow example on a loaded machine is not a failure.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", max_examples=60, deadline=None, print_blob=True)
settings.register_profile("fuzz", parent=settings.get_profile("ci"), max_examples=2000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
