"""The command table and what every command shares: global options, the store, the actor,
the clock, errors and output.

A command is a :class:`Command` — its words (``("va", "create")``), a function adding its
arguments, and an async handler taking an :class:`Invocation`. Modules list theirs in a
``COMMANDS`` tuple and ``cli/__init__.py`` names the modules; the parser is built from the
table. By default a command runs in one write transaction with the acting user loaded; a
command declares ``store="read"`` for a snapshot, ``store="create"`` to make a new database
(``init``) or ``store="none"`` to manage everything itself (``run``), and ``acting_user=False``
when nobody needs to be logged in.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal, NoReturn

from smartlic.collector.cli.output import FORMATS, Format, Listing, Report, render
from smartlic.collector.cli.values import parse_time
from smartlic.collector.errors import Refused
from smartlic.collector.signing_key import KeyFileError, default_key_path
from smartlic.collector.store import StoreError, open_store
from smartlic.collector.users import load_actor

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping, Sequence

    from smartlic.collector.rbac import Actor
    from smartlic.collector.store import Store, Transaction

PROG: Final = "smartlic-collector"
DEFAULT_DB: Final = "smartlic.db"
KEY_ENV: Final = "SMARTLIC_KEY"
EXIT_REFUSED: Final = 1
EXIT_USAGE: Final = 2

Output = Listing | Report | int | None


class UsageError(Exception):
    """The command line is wrong (exit 2)."""


@dataclass
class Invocation:
    """One run of one command: its arguments and what they resolve to."""

    args: argparse.Namespace
    db: Path
    key_path: Path
    user: str | None
    now: int
    """The clock (``SMARTLIC_NOW`` overrides it, for tests and demos)."""
    entropy: Callable[[int], bytes] = secrets.token_bytes
    store: Store | None = None
    _tx: Transaction | None = None
    _actor: Actor | None = None

    @property
    def tx(self) -> Transaction:
        if self._tx is None:
            message = "this command runs without a transaction"
            raise RuntimeError(message)
        return self._tx

    @property
    def actor(self) -> Actor:
        if self._actor is None:
            message = "this command runs without an acting user"
            raise RuntimeError(message)
        return self._actor


def _no_arguments(_: argparse.ArgumentParser) -> None:
    return None


@dataclass(frozen=True)
class Command:
    words: tuple[str, ...]
    summary: str
    handler: Callable[[Invocation], Awaitable[Output]]
    arguments: Callable[[argparse.ArgumentParser], None] = field(default=_no_arguments)
    acting_user: bool = True
    store: Literal["write", "read", "create", "none"] = "write"


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing a usage block and exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see --help)")


def _global_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    # Given on the root parser *and* on every command, so they work before or after the
    # command words; on commands their default is "not given", leaving the root's value.
    def default(value: object) -> object:
        return value if defaults else argparse.SUPPRESS

    parser.add_argument(
        "--db", type=Path, default=default(None), help=f"database (env SMARTLIC_DB; {DEFAULT_DB})"
    )
    parser.add_argument(
        "--key",
        type=Path,
        default=default(None),
        help=f"collector key file (env {KEY_ENV}; default: DB.key)",
    )
    parser.add_argument(
        "--as",
        dest="user",
        metavar="EMAIL",
        default=default(None),
        help="the acting user (env SMARTLIC_USER)",
    )
    parser.add_argument(
        "--format", choices=FORMATS, default=default("table"), help="output of listings"
    )


def build_parser(commands: Sequence[Command]) -> argparse.ArgumentParser:
    root = _Parser(prog=PROG, description="smartlic collector: administration and service")
    _global_options(root, defaults=True)
    groups: dict[tuple[str, ...], argparse._SubParsersAction[_Parser]] = {
        (): root.add_subparsers(dest="command", metavar="COMMAND", required=True)
    }
    parsers: dict[tuple[str, ...], argparse.ArgumentParser] = {}
    for command in sorted(commands, key=lambda c: c.words):
        for depth in range(1, len(command.words)):
            prefix = command.words[:depth]
            if prefix not in groups:
                parent = groups[prefix[:-1]]
                group = parent.add_parser(prefix[-1], help=f"{prefix[-1]} commands")
                parsers[prefix] = group
                groups[prefix] = group.add_subparsers(
                    dest=f"command_{depth}", metavar="COMMAND", required=True
                )
        leaf = groups[command.words[:-1]].add_parser(
            command.words[-1], help=command.summary, description=command.summary
        )
        _global_options(leaf, defaults=False)
        command.arguments(leaf)
        leaf.set_defaults(run_command=command)
    return root


def key_path(flag: Path | None, environ: Mapping[str, str], db: Path) -> Path:
    """The collector key file, the same for every command: ``--key``, else ``SMARTLIC_KEY``,
    else the database path + ``.key``."""
    if flag is not None:
        return flag
    named = environ.get(KEY_ENV)
    return Path(named).expanduser() if named else default_key_path(db)


def _now(environ: dict[str, str]) -> int:
    """``SMARTLIC_NOW`` (seconds or ISO 8601), else the real clock: tests move time with it."""
    fixed = environ.get("SMARTLIC_NOW")
    if fixed:
        try:
            return parse_time(fixed)
        except argparse.ArgumentTypeError as exc:
            raise UsageError(f"SMARTLIC_NOW: {exc}") from None
    return int(time.time())


async def _execute(command: Command, invocation: Invocation) -> Output:
    if command.store == "none":
        return await command.handler(invocation)
    store = await open_store(invocation.db, create=command.store == "create")
    invocation.store = store
    try:
        transaction = store.read() if command.store == "read" else store.write()
        async with transaction as tx:
            invocation._tx = tx  # noqa: SLF001 -- the invocation is this module's own
            if command.acting_user:
                invocation._actor = await load_actor(tx, invocation.user or "")  # noqa: SLF001 -- same
            return await command.handler(invocation)
    finally:
        await store.close()


def _fail(message: str, code: int) -> int:
    print(" ".join(message.split()), file=sys.stderr)  # noqa: T201 -- the CLI's error line
    return code


def run_cli(commands: Sequence[Command], argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, run the command, print its output; the exit status."""
    environ = dict(os.environ)
    parser = build_parser(commands)
    try:
        args = parser.parse_args(argv)
        command: Command = args.run_command
        db = args.db or Path(environ.get("SMARTLIC_DB") or DEFAULT_DB)
        if not db.name:
            # "." or "": no file to open, and no name to put the key file beside.
            raise UsageError(f"--db must name a database file, not {str(db)!r}")
        user = args.user or environ.get("SMARTLIC_USER")
        if command.acting_user and not user:
            raise UsageError("who is acting? pass --as EMAIL or set SMARTLIC_USER")
        invocation = Invocation(
            args=args,
            db=db,
            key_path=key_path(args.key, environ, db),
            user=user,
            now=_now(environ),
        )
        output = asyncio.run(_execute(command, invocation))
    except UsageError as exc:
        return _fail(str(exc) if str(exc).startswith(PROG) else f"{PROG}: {exc}", EXIT_USAGE)
    except (Refused, StoreError, KeyFileError) as exc:
        return _fail(f"{PROG}: error: {exc}", EXIT_REFUSED)
    except KeyboardInterrupt:
        return _fail(f"{PROG}: interrupted", 130)
    except Exception as exc:  # noqa: BLE001 -- the contract is one line, never a traceback
        if environ.get("SMARTLIC_DEBUG"):
            traceback.print_exc()
        return _fail(
            f"{PROG}: internal error: {type(exc).__name__}: {exc} (SMARTLIC_DEBUG=1 shows more)",
            EXIT_REFUSED,
        )
    if isinstance(output, int):
        return output
    if output is not None:
        fmt: Format = args.format
        sys.stdout.write(render(output, fmt))
    return 0
