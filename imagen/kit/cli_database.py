"""The services a CLI command runs on, as the root command (imagen/cli.py) opens them for it.

The root command's callback sets the opener for the invocation (`CLI_OPENER`); commands in the domains' CLI modules
call `cli_services()` (or `migrated_database()` for just the database and settings), so they use the same
composition root as the server without importing it (kit and the domains sit below it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from imagen.kit.config import Settings
    from imagen.kit.db import Database

Opener = Callable[[], AbstractContextManager[Any]]
CLI_OPENER: ContextVar[Opener | None] = ContextVar("imagen_cli_opener", default=None)


@contextmanager
def cli_services() -> Iterator[Any]:
    """The composition root's services for this command: migrated, the policy version recorded, then disposed."""
    opener = CLI_OPENER.get()
    if opener is None:
        raise RuntimeError("run this command through the `imagen` CLI (imagen/cli.py opens its services)")
    with opener() as services:
        yield services


@contextmanager
def migrated_database() -> Iterator[tuple[Database, Settings]]:
    """(db, settings) for one command; the engine is disposed afterwards."""
    with cli_services() as services:
        yield services.db, services.settings
