"""The SQLite store: migrations at open, WAL and foreign keys, one transaction per operation."""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import threading
import time
from typing import TYPE_CHECKING, Any

import aiosqlite
import pytest
from smartlic.collector.store import (
    ConstraintError,
    SchemaError,
    Store,
    StoreError,
    open_store,
)
from smartlic.collector.store.migrations import LATEST_VERSION, MIGRATIONS
from smartlic.collector.store.sqlite import SqliteStore

if TYPE_CHECKING:
    from pathlib import Path


async def test_a_new_database_gets_every_migration(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "c.db", create=True)
    try:
        assert LATEST_VERSION == await store.schema_version()
    finally:
        await store.close()


async def test_reopening_applies_nothing_twice(tmp_path: Path) -> None:
    for _ in range(2):
        store = await open_store(tmp_path / "c.db", create=True)
        await store.close()
    with sqlite3.connect(tmp_path / "c.db") as conn:
        applied = conn.execute("SELECT version FROM schema_migrations").fetchall()
    assert [(m.version,) for m in MIGRATIONS] == applied


async def test_a_missing_database_is_an_error_not_a_new_file(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no collector database"):
        await open_store(tmp_path / "typo.db")
    assert not (tmp_path / "typo.db").exists()


async def test_a_schema_newer_than_the_code_is_refused(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "c.db", create=True)
    await store.close()
    with sqlite3.connect(tmp_path / "c.db") as conn:
        conn.execute("INSERT INTO schema_migrations VALUES (?, 'from the future')", (999,))
    with pytest.raises(SchemaError, match="schema version 999"):
        await open_store(tmp_path / "c.db")


async def test_a_file_that_is_not_a_database_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "c.db").write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(StoreError):
        await open_store(tmp_path / "c.db")


async def test_the_database_runs_in_wal_mode_with_foreign_keys(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "c.db", create=True)
    try:
        async with store.read() as tx:
            journal = await tx.fetch_one("PRAGMA journal_mode")
            keys = await tx.fetch_one("PRAGMA foreign_keys")
    finally:
        await store.close()
    assert journal == {"journal_mode": "wal"}
    assert keys == {"foreign_keys": 1}


async def test_foreign_keys_are_enforced(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "c.db", create=True)
    try:
        with pytest.raises(ConstraintError):
            async with store.write() as tx:
                await tx.execute(
                    "INSERT INTO virtual_accounts (account_id, name, created_at)"
                    " VALUES (42, 'x', 0)"
                )
    finally:
        await store.close()


async def test_an_interrupted_operation_leaves_nothing_half_done(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "c.db", create=True)
    try:
        with pytest.raises(RuntimeError, match="crash"):
            await _insert_then_crash(store)
        async with store.read() as tx:
            users = await tx.fetch_all("SELECT * FROM users")
    finally:
        await store.close()
    assert [] == users


async def _insert_then_crash(store: Store) -> None:
    async with store.write() as tx:
        await tx.execute("INSERT INTO users (email, created_at) VALUES ('a@b.c', 0)")
        raise RuntimeError("crash")


async def test_a_cancelled_operation_is_rolled_back(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "c.db", create=True)
    started = asyncio.Event()

    async def slow_write() -> None:
        async with store.write() as tx:
            await tx.execute("INSERT INTO users (email, created_at) VALUES ('a@b.c', 0)")
            started.set()
            await asyncio.sleep(10)

    try:
        task = asyncio.create_task(slow_write())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        async with store.read() as tx:
            users = await tx.fetch_all("SELECT * FROM users")
    finally:
        await store.close()
    assert [] == users


def _cancelled_at(store: SqliteStore, statement: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The task running ``statement`` is cancelled once aiosqlite has queued it: the
    statement still runs, on the connection's thread."""
    execute = store.conn.execute

    async def cancelling(sql: str, *args: Any) -> Any:
        if sql == statement:
            queued = execute(sql, *args)
            task = asyncio.current_task()
            assert task is not None
            task.cancel()
            return await queued
        return await execute(sql, *args)

    monkeypatch.setattr(store.conn, "execute", cancelling)


async def test_a_write_cancelled_during_its_commit_ends_cancelled_with_its_rows_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not a store error from a ROLLBACK queued behind a COMMIT that went through: that
    hid the cancellation, and a service task went on running after its group was cancelled."""
    store = await SqliteStore.open(tmp_path / "c.db", create=True)
    try:

        async def write() -> None:
            async with store.write() as tx:
                await tx.execute("INSERT INTO users (email, created_at) VALUES ('a@b.c', 0)")
                _cancelled_at(store, "COMMIT", monkeypatch)

        with pytest.raises(asyncio.CancelledError):
            await asyncio.create_task(write())
        monkeypatch.undo()
        async with store.read() as tx:
            users = await tx.fetch_all("SELECT email FROM users")
    finally:
        await store.close()
    assert [{"email": "a@b.c"}] == users


async def test_a_write_cancelled_during_its_begin_leaves_no_transaction_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await SqliteStore.open(tmp_path / "c.db", create=True)
    try:
        _cancelled_at(store, "BEGIN IMMEDIATE", monkeypatch)

        async def write() -> None:
            async with store.write() as tx:
                await tx.execute("INSERT INTO users (email, created_at) VALUES ('a@b.c', 0)")

        with pytest.raises(asyncio.CancelledError):
            await asyncio.create_task(write())
        monkeypatch.undo()
        async with store.write() as tx:
            await tx.execute("INSERT INTO users (email, created_at) VALUES ('d@e.f', 0)")
        async with store.read() as tx:
            users = await tx.fetch_all("SELECT email FROM users")
    finally:
        await store.close()
    assert [{"email": "d@e.f"}] == users


async def test_a_writer_waits_for_another_process_writer(tmp_path: Path) -> None:
    """Two connections (the CLI and the service) take turns instead of failing."""
    first = await open_store(tmp_path / "c.db", create=True)
    second = await open_store(tmp_path / "c.db")
    try:
        async with first.write() as tx:
            await tx.execute("INSERT INTO users (email, created_at) VALUES ('a@b.c', 0)")
            waiting = asyncio.create_task(_insert(second, "d@e.f"))
            await asyncio.sleep(0.05)
            assert not waiting.done()
        await waiting
        async with second.read() as tx:
            emails = [r["email"] for r in await tx.fetch_all("SELECT email FROM users")]
    finally:
        await first.close()
        await second.close()
    assert ["a@b.c", "d@e.f"] == sorted(emails)


async def _insert(store: Store, email: str) -> None:
    async with store.write() as tx:
        await tx.execute("INSERT INTO users (email, created_at) VALUES (?, 0)", (email,))


async def test_execute_many_with_no_rows_does_not_reach_the_connection(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "c.db", create=True)
    try:
        async with store.write() as tx:
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(store.conn, "executemany", _unreachable)  # type: ignore[attr-defined]  # the SQLite store's connection
                await tx.execute_many("INSERT INTO users (email, created_at) VALUES (?, 0)", [])
    finally:
        await store.close()


async def _unreachable(*_: object) -> None:
    raise AssertionError("execute_many went to the connection with no rows")


async def test_fetch_in_reads_lists_longer_than_one_chunk(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "c.db", create=True)
    try:
        async with store.write() as tx:
            await tx.execute_many(
                "INSERT INTO users (email, created_at) VALUES (?, 0)",
                [(f"u{i}@x.y",) for i in range(1200)],
            )
            rows = await tx.fetch_in(
                "SELECT email FROM users WHERE email IN ({in})", [f"u{i}@x.y" for i in range(1200)]
            )
    finally:
        await store.close()
    assert 1200 == len(rows)


async def test_a_nested_transaction_is_an_error_not_a_hang(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "c.db", create=True)
    try:
        async with store.read():
            with pytest.raises(RuntimeError, match="do not nest"):
                async with store.write():
                    pass
    finally:
        await store.close()


async def _versions(store: Store, *, write: bool = True) -> tuple[object, object]:
    async with store.write() if write else store.read() as tx:
        versions = await tx.versions()
    return versions.start, versions.end


async def test_after_a_write_nothing_else_committed_the_next_transaction_starts_where_it_ended(
    tmp_path: Path,
) -> None:
    store = await open_store(tmp_path / "c.db", create=True)
    try:
        _, end = await _versions(store)
        start, _ = await _versions(store)
    finally:
        await store.close()
    assert end == start


async def test_a_read_leaves_the_version_it_found(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "c.db", create=True)
    try:
        _, end = await _versions(store)
        start, read_end = await _versions(store, write=False)
        later, _ = await _versions(store)
    finally:
        await store.close()
    assert (end, end, end) == (start, read_end, later)


@pytest.mark.parametrize("writer", ["another connection", "this store"])
async def test_any_other_commit_changes_the_version(tmp_path: Path, writer: str) -> None:
    """The CLI or a second collector writing to the same file, or another task of this
    process: what was kept from the last transaction may be stale."""
    store = await open_store(tmp_path / "c.db", create=True)
    other = await open_store(tmp_path / "c.db") if writer == "another connection" else store
    try:
        _, end = await _versions(store)
        async with other.write() as tx:
            await tx.execute("INSERT INTO users (email, created_at) VALUES ('a@b.c', 0)")
        start, _ = await _versions(store)
    finally:
        if other is not store:
            await other.close()
        await store.close()
    assert end != start


async def test_a_write_that_rolls_back_leaves_a_version_nothing_matches(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "c.db", create=True)
    ended: list[object] = []

    async def versions_then_crash() -> None:
        async with store.write() as tx:
            ended.append((await tx.versions()).end)
            raise RuntimeError("crash")

    try:
        with pytest.raises(RuntimeError, match="crash"):
            await versions_then_crash()
        start, _ = await _versions(store)
    finally:
        await store.close()
    assert ended != [start]


async def test_opening_a_current_database_takes_no_write_lock(tmp_path: Path) -> None:
    """With no migration pending, opening only reads: a read-only command opening the store
    while another process writes does not wait for it (nor fail when it writes for long)."""
    store = await open_store(tmp_path / "c.db", create=True)
    await store.close()
    writer = sqlite3.connect(tmp_path / "c.db", isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        reader = await SqliteStore.open(tmp_path / "c.db", busy_timeout=0.5)
        try:
            version = await reader.schema_version()
        finally:
            await reader.close()
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert LATEST_VERSION == version


async def test_two_processes_creating_a_database_at_once_apply_each_migration_once(
    tmp_path: Path,
) -> None:
    """The version read before is read again under the write lock: the second to get it
    finds the migrations applied by the first."""
    stores = await asyncio.gather(*(open_store(tmp_path / "c.db", create=True) for _ in "ab"))
    for store in stores:
        await store.close()
    with sqlite3.connect(tmp_path / "c.db") as conn:
        applied = conn.execute("SELECT version FROM schema_migrations").fetchall()
    assert [(m.version,) for m in MIGRATIONS] == applied


async def test_a_writer_waiting_for_another_process_lock_can_be_cancelled_at_once(
    tmp_path: Path,
) -> None:
    """SQLite's busy handler cannot be interrupted: the store gives it the wait a step at a
    time, so a task told to stop (a shutdown) is not held for the whole busy timeout."""
    store = await open_store(tmp_path / "c.db", create=True)
    writer = sqlite3.connect(tmp_path / "c.db", isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        waiting = asyncio.create_task(_insert(store, "a@b.c"))
        await asyncio.sleep(0.3)
        waiting.cancel()
        cancelled = time.monotonic()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        took = time.monotonic() - cancelled
    finally:
        writer.execute("ROLLBACK")
        writer.close()
        await store.close()
    assert took < 1.0


async def test_a_writer_still_fails_busy_once_the_busy_timeout_is_over(tmp_path: Path) -> None:
    await (await open_store(tmp_path / "c.db", create=True)).close()
    store = await SqliteStore.open(tmp_path / "c.db", busy_timeout=0.3)
    writer = sqlite3.connect(tmp_path / "c.db", isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreError, match="is busy"):
            await _insert(store, "a@b.c")
    finally:
        writer.execute("ROLLBACK")
        writer.close()
        await store.close()


async def test_a_database_that_cannot_be_opened_leaves_no_connection_thread_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """aiosqlite stops the thread of a failed connect with a future nobody awaits: a thread
    still running when the CLI's event loop closes answers it then, with two tracebacks. The
    stop is slowed here, so the thread is still running when open() fails unless open()
    waited for it."""
    stop = aiosqlite.Connection.stop

    def slow_stop(conn: aiosqlite.Connection) -> asyncio.Future[Any] | None:
        conn._tx.put_nowait((None, functools.partial(time.sleep, 0.3)))
        return stop(conn)

    monkeypatch.setattr(aiosqlite.Connection, "stop", slow_stop)
    (tmp_path / "a-folder").mkdir()
    with pytest.raises(StoreError, match="unable to open database file"):
        await open_store(tmp_path / "a-folder", create=True)
    assert [] == [t.name for t in threading.enumerate() if "_connection_worker" in t.name]
