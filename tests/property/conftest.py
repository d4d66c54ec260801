"""Hypothesis profiles for the property tests, chosen by ``HYPOTHESIS_PROFILE``.

``ci`` (the default, what ``make test`` runs) keeps the property tests to about 25 s on the
two-core machine; ``fuzz`` (``make fuzz``) runs many more examples. No deadline per example:
an example is a sequence of real syncs against real databases, and a slow one on a loaded
machine is not a failure.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", max_examples=70, deadline=None, print_blob=True)
settings.register_profile("fuzz", parent=settings.get_profile("ci"), max_examples=1500)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
