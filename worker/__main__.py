"""``python -m worker`` is the same as the ``openrouter-watcher`` console script."""

from worker.cli import main

raise SystemExit(main())
