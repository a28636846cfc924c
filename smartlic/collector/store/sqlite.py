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
from typing import TYPE_CHECKING, Any, Final, Self, cast

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
    from collections.abc import AsyncIterator, Iterable, Iterator
    from pathlib import Path

SQLITE: Final = Dialect(
    name="sqlite", id_column="INTEGER PRIMARY KEY AUTOINCREMENT", bytes_type="BLOB"
)
DEFAULT_BUSY_TIMEOUT: Final = 10.0


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
        if "locked" in str(exc) or "busy" in str(exc):
            raise StoreError(
                f"{path} is busy: another process held its write lock for too long"
            ) from exc
        raise StoreError(f"{path}: {exc}") from exc
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: {exc}") from exc


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

    def __init__(self, conn: aiosqlite.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path
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
        with _translated(path):
            conn = await aiosqlite.connect(path, isolation_level=None)
        store = cls(conn, path)
        try:
            with _translated(path):
                conn.row_factory = _dict_row  # type: ignore[assignment]  # aiosqlite types it as a class; sqlite3 takes any callable
                await conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
                mode = await conn.execute_fetchall("PRAGMA journal_mode = WAL")
                if mode and next(iter(mode))["journal_mode"] != "wal":
                    raise StoreError(f"{path}: cannot switch to WAL mode")
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

    async def _migrate(self) -> None:
        async with self.write() as tx:
            await tx.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version INTEGER PRIMARY KEY, name TEXT NOT NULL)"
            )
        while True:
            async with self.write() as tx:
                # Read the version inside the write lock: two processes opening a new
                # database at once must not both apply the same migration.
                row = await tx.fetch_one("SELECT MAX(version) AS version FROM schema_migrations")
                current = int(row["version"]) if row and row["version"] is not None else 0
                if current > LATEST_VERSION:
                    raise SchemaError(
                        f"{self.path} has schema version {current}; this smartlic knows up to"
                        f" {LATEST_VERSION} (upgrade smartlic)"
                    )
                pending = [m for m in MIGRATIONS if m.version > current]
                if not pending:
                    return
                migration = pending[0]
                for statement in migration.statements:
                    await tx.execute(self.dialect.render(statement))
                await tx.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (?, ?)",
                    (migration.version, migration.name),
                )

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
                with _translated(self.path):
                    await self._conn.execute(begin)
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
