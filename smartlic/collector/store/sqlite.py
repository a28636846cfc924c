"""The SQLite backend (aiosqlite): WAL, foreign keys, serialized writers, migrations at open.

Everything SQLite-specific lives here: the pragmas, ``BEGIN IMMEDIATE`` (a writer takes the
write lock before it reads, so "check, then write" inside one transaction cannot race another
process — the admin CLI and the service share the file), the busy timeout that makes a writer
wait for another's transaction instead of failing, and the translation of ``sqlite3`` errors.

One connection carries one transaction at a time; an :class:`asyncio.Lock` makes coroutines of
one process take turns, so the service's batches and its change-feed poller can share a store.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from typing import TYPE_CHECKING, Any, Final, Self, TypeVar, cast

import aiosqlite

from smartlic.collector.store.backend import (
    ConstraintError,
    Dialect,
    Params,
    Row,
    SchemaError,
    Store,
    StoreError,
    Transaction,
    Versions,
)
from smartlic.collector.store.migrations import LATEST_VERSION, MIGRATIONS

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
    from pathlib import Path

    from smartlic.collector.store.migrations import Migration

SQLITE: Final = Dialect(
    name="sqlite", id_column="INTEGER PRIMARY KEY AUTOINCREMENT", bytes_type="BLOB"
)
T = TypeVar("T")
DEFAULT_BUSY_TIMEOUT: Final = 10.0
BUSY_STEP: Final = 0.1
"""Seconds SQLite itself waits for a lock before the store tries again (see ``_begin``)."""


def _is_busy(exc: sqlite3.Error) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and (
        "locked" in str(exc) or "busy" in str(exc)
    )


def _dict_row(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> Row:
    return {column[0]: value for column, value in zip(cursor.description, row, strict=True)}


@contextlib.contextmanager
def _translated(path: Path) -> Iterator[None]:
    """sqlite3's errors as the store's own, naming the file."""
    try:
        yield
    except sqlite3.IntegrityError as exc:
        raise ConstraintError(f"{path}: {exc}") from exc
    except sqlite3.OperationalError as exc:
        if _is_busy(exc):
            raise StoreError(
                f"{path} is busy: another process held its write lock for too long"
            ) from exc
        raise StoreError(f"{path}: {exc}") from exc
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: {exc}") from exc


async def _connect(path: Path) -> aiosqlite.Connection:
    """A connection to ``path``; one that cannot be opened ends its thread before failing.

    aiosqlite, when the connect fails, stops its thread with a future nobody awaits: the
    thread then answers it once the CLI's event loop is closed, and prints two tracebacks.
    """
    conn = aiosqlite.connect(path, isolation_level=None)
    try:
        with _translated(path):
            return await conn
    except BaseException:
        # The stop is queued behind the failed connect; joining is near-instant.
        await asyncio.to_thread(conn._thread.join)  # noqa: SLF001 -- aiosqlite has no public way to wait for its thread
        raise


class _SqliteTransaction(Transaction):
    def __init__(self, store: SqliteStore, *, writes: bool) -> None:
        self._store = store
        self._conn = store.conn
        self._path = store.path
        self._writes = writes

    async def versions(self) -> Versions:
        # PRAGMA data_version changes when another connection commits, never for this
        # connection's own commits (https://www.sqlite.org/pragma.html#pragma_data_version):
        # the store counts those.
        rows = await self.fetch_all("PRAGMA data_version")
        others, own = int(rows[0]["data_version"]), self._store.commits
        return Versions(start=(others, own), end=(others, own + int(self._writes)))

    async def execute(self, sql: str, params: Params = ()) -> int:
        with _translated(self._path):
            cursor = await self._conn.execute(sql, params)
            return cursor.rowcount

    async def execute_many(self, sql: str, rows: Iterable[Params]) -> None:
        rows = list(rows)
        if not rows:
            # Batches often have nothing for a table (dead letters, pushes): a hop to the
            # connection's thread costs ≈ 50 µs of the event loop's CPU for nothing.
            return
        with _translated(self._path):
            await self._conn.executemany(sql, rows)

    async def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        with _translated(self._path):
            # The connection's row factory (_dict_row) makes every row a dict.
            return cast("list[Row]", list(await self._conn.execute_fetchall(sql, params)))


class SqliteStore(Store):
    dialect = SQLITE

    def __init__(
        self, conn: aiosqlite.Connection, path: Path, *, busy_timeout: float = DEFAULT_BUSY_TIMEOUT
    ) -> None:
        self._conn = conn
        self.path = path
        self._busy_timeout = busy_timeout
        self.commits = 0
        """Write transactions this store has committed (see :meth:`Transaction.versions`)."""
        self._turn = asyncio.Lock()
        self._holder: asyncio.Task[object] | None = None

    @classmethod
    async def open(
        cls, path: Path, *, create: bool = False, busy_timeout: float = DEFAULT_BUSY_TIMEOUT
    ) -> Self:
        """Open (with ``create``, make) the database at ``path`` and bring its schema up to date.

        Without ``create`` a missing file is an error rather than a new empty database: a
        mistyped ``--db`` should say so, not silently start from nothing.
        """
        if not create and not path.exists():  # noqa: ASYNC240 -- one stat, once per process, before connecting
            raise StoreError(f"no collector database at {path}")
        if create and not path.parent.is_dir():
            # SQLite would only say "unable to open database file".
            raise StoreError(f"cannot create {path}: there is no folder {path.parent}")
        conn = await _connect(path)
        store = cls(conn, path, busy_timeout=busy_timeout)
        try:
            with _translated(path):
                conn.row_factory = _dict_row  # type: ignore[assignment]  # aiosqlite types it as a class; sqlite3 takes any callable
                step = min(busy_timeout, BUSY_STEP)
                # SQLite waits for a lock a step at a time and the store waits the rest
                # (_begin, _wal): a task waiting for another process's lock stays cancellable.
                await conn.execute(f"PRAGMA busy_timeout = {int(step * 1000)}")
            await store._wal()
            with _translated(path):
                await conn.execute("PRAGMA foreign_keys = ON")
                # 64 MiB of page cache (the default is 2): the service touches devices at
                # random, and keeping their pages in memory keeps a report's cost flat.
                await conn.execute("PRAGMA cache_size = -65536")
                # FULL: a commit is on disk before the service acknowledges what it decided.
                await conn.execute("PRAGMA synchronous = FULL")
            await store._migrate()
        except BaseException:
            await conn.close()
            raise
        return store

    async def _wal(self) -> None:
        """Switch to WAL mode. On a new database that takes an exclusive lock, which SQLite
        may refuse at once, without waiting, when another process opens it at the same time
        (it would deadlock): tried again until the busy timeout is over."""
        mode = await self._while_busy(
            lambda: self._conn.execute_fetchall("PRAGMA journal_mode = WAL"), pause=BUSY_STEP / 10
        )
        if mode and next(iter(mode))["journal_mode"] != "wal":
            raise StoreError(f"{self.path}: cannot switch to WAL mode")

    async def _migrate(self) -> None:
        # A plain read first: with no migration pending (every open but the first after an
        # upgrade) a read-only command must not wait for another process's write lock.
        async with self.read() as tx:
            current = await self._version(tx)
        while self._pending(current):
            async with self.write() as tx:
                await tx.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations ("
                    " version INTEGER PRIMARY KEY, name TEXT NOT NULL)"
                )
                # Read the version again inside the write lock: another process opening the
                # database meanwhile may have applied this migration already.
                current = await self._version(tx)
                pending = self._pending(current)
                if not pending:
                    return
                migration = pending[0]
                for statement in migration.statements:
                    await tx.execute(self.dialect.render(statement))
                await tx.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (?, ?)",
                    (migration.version, migration.name),
                )
                current = migration.version

    async def _version(self, tx: Transaction) -> int:
        """The schema version, 0 for a new database (no ``schema_migrations`` table yet)."""
        table = await tx.fetch_one(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
        )
        if table is None:
            return 0
        row = await tx.fetch_one("SELECT MAX(version) AS version FROM schema_migrations")
        return int(row["version"]) if row and row["version"] is not None else 0

    def _pending(self, current: int) -> list[Migration]:
        if current > LATEST_VERSION:
            raise SchemaError(
                f"{self.path} has schema version {current}; this smartlic knows up to"
                f" {LATEST_VERSION} (upgrade smartlic)"
            )
        return [m for m in MIGRATIONS if m.version > current]

    async def schema_version(self) -> int:
        async with self.read() as tx:
            row = await tx.fetch_one("SELECT MAX(version) AS version FROM schema_migrations")
            return int(row["version"]) if row and row["version"] is not None else 0

    @property
    def conn(self) -> aiosqlite.Connection:
        return self._conn

    @contextlib.asynccontextmanager
    async def _transaction(self, begin: str, *, writes: bool) -> AsyncIterator[Transaction]:
        if self._holder is not None and self._holder is asyncio.current_task():
            # Waiting for our own lock would hang forever; say what went wrong instead.
            message = "a transaction is already open in this task; transactions do not nest"
            raise RuntimeError(message)
        async with self._turn:
            self._holder = asyncio.current_task()
            try:
                await self._begin(begin)
                yield _SqliteTransaction(self, writes=writes)
                with _translated(self.path):
                    await self._conn.execute("COMMIT")
                self.commits += int(writes)
            except BaseException:
                # aiosqlite runs a statement to its end on its own thread even when the task
                # awaiting it is cancelled: let what is queued (a COMMIT, say) run first, or a
                # ROLLBACK would follow a COMMIT that went through, fail, and hide the
                # cancellation behind a made-up store error.
                await self._settle()
                # Some errors (a full disk, an interrupt) make SQLite roll back by itself.
                if self._conn.in_transaction:
                    with contextlib.suppress(StoreError), _translated(self.path):
                        await self._conn.execute("ROLLBACK")
                # Whether a failed or cancelled COMMIT went through is not known here: step
                # past both the version the write started at and the one it would have ended
                # at, so that nothing kept against either is trusted.
                self.commits += 2 * int(writes)
                raise
            finally:
                self._holder = None

    async def _begin(self, begin: str) -> None:
        """Run ``begin``, waiting up to the busy timeout for a lock another process holds.

        SQLite's busy handler sleeps on the connection's thread, where neither a cancellation
        nor an interrupt reaches it: it is given one step (BUSY_STEP) at a time, so a task
        cancelled meanwhile (the service told to stop) is free within a step.
        """
        await self._while_busy(lambda: self._conn.execute(begin))

    async def _while_busy(self, run: Callable[[], Awaitable[T]], *, pause: float = 0.0) -> T:
        """``run()`` again while it finds the database busy, up to the busy timeout, with
        ``pause`` seconds between tries (for a statement SQLite refuses without waiting)."""
        deadline = time.monotonic() + self._busy_timeout
        with _translated(self.path):
            while True:
                try:
                    return await run()
                except sqlite3.Error as exc:
                    if not _is_busy(exc) or time.monotonic() >= deadline:
                        raise
                    if pause:
                        await asyncio.sleep(pause)

    async def _settle(self) -> None:
        """Wait until the connection's thread has run every statement queued so far."""
        with contextlib.suppress(Exception):
            await asyncio.shield(self._conn.execute("SELECT 1"))

    def write(self) -> contextlib.AbstractAsyncContextManager[Transaction]:
        return self._transaction("BEGIN IMMEDIATE", writes=True)

    def read(self) -> contextlib.AbstractAsyncContextManager[Transaction]:
        return self._transaction("BEGIN", writes=False)

    async def close(self) -> None:
        await self._conn.close()
