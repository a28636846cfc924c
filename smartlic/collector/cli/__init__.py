"""``smartlic-collector``: the collector's command line.

Commands are table-driven: each module named in :data:`COMMAND_MODULES` exposes a ``COMMANDS``
tuple of :class:`~smartlic.collector.cli.framework.Command`. To add one — ``run``, the service,
say — write ``smartlic/collector/cli/run.py`` with::

    COMMANDS = (
        Command(("run",), "run the collector service", _run, _run_arguments,
                acting_user=False, store="none"),
    )

and add ``"run"`` to :data:`COMMAND_MODULES`. ``store="none"`` hands the handler the parsed
arguments (``invocation.args``), ``invocation.db``, ``invocation.key_path`` and
``invocation.now`` and lets it open the store itself; returning an ``int`` sets the exit status.

Environment: ``SMARTLIC_DB`` (the database, default ``smartlic.db``), ``SMARTLIC_USER`` (the
acting user, like ``--as``), ``SMARTLIC_NOW`` (a fixed clock for tests and demos: seconds or
ISO 8601), ``SMARTLIC_DEBUG`` (print a traceback on an internal error).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Final

from smartlic.collector.cli.framework import Command, run_cli

if TYPE_CHECKING:
    from collections.abc import Sequence

COMMAND_MODULES: Final = ("site", "accounts", "licenses", "devices", "users", "run")


def commands() -> list[Command]:
    found: list[Command] = []
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        found.extend(module.COMMANDS)
    return found


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(commands(), argv)


__all__ = ["COMMAND_MODULES", "Command", "commands", "main"]
