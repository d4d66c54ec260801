"""What a command handler is given: the settings, the database and the streams, each created
when first asked for, so ``--help`` and ``generate-key`` need no database."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from worker.config import Settings, load_settings
from worker.core import render
from worker.core.logs import configure_logging

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session, sessionmaker


@dataclass
class Context:
    """What a command needs, created lazily so `--help` and `generate-key` need no database."""

    config_path: str | None
    log_level: str | None = None
    stdin: TextIO = field(default_factory=lambda: sys.stdin)
    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)
    _settings: Settings | None = None
    _engine: Engine | None = None
    _factory: sessionmaker[Session] | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config_path)
        return self._settings

    def override_settings(self, settings: Settings) -> None:
        """Replace the loaded settings (before the engine is created)."""
        self._settings = settings

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            from worker.store.db import engine_from_settings

            self._engine = engine_from_settings(self.settings)
        return self._engine

    def sessions(self, *, check: bool = True) -> sessionmaker[Session]:
        """The session factory; by default only once the schema is known to be at head."""
        if self._factory is None:
            from worker.store.db import check_schema, make_session_factory

            if check:
                check_schema(self.engine)
            self._factory = make_session_factory(self.engine)
        return self._factory

    def setup_logging(
        self, stream: TextIO | None = None, fmt: str | None = None, *, lazy: bool = False
    ) -> None:
        """Configure logging (``lazy``: structlog is loaded by the first line logged)."""
        settings = self.settings
        configure_logging(
            self.log_level or settings.logging.level,
            fmt or settings.logging.format,
            stream or self.stderr,
            lazy=lazy,
        )

    def out(self, text: str = "") -> None:
        print(text, file=self.stdout)

    def print_table(
        self,
        headers: Sequence[str],
        rows: Sequence[Sequence[Any]],
        **options: Any,
    ) -> None:
        """A table on stdout (:func:`worker.core.render.table`)."""
        for line in render.table(headers, rows, **options):
            self.out(line)

    def print_json(self, value: Any) -> None:
        """``value`` as the stable JSON document on stdout (:func:`worker.core.render.to_json`)."""
        self.out(render.to_json(value))

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
