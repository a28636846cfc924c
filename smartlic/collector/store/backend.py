"""The narrow interface every store backend implements, and nothing more.

Theory of operation: the domain (``collector/*.py``) writes portable SQL — ANSI types, ``?``
placeholders, ``INSERT ... ON CONFLICT ... DO UPDATE``, ``RETURNING`` — and runs it through a
:class:`Transaction`. A backend owns everything database-specific: connecting, pragmas, how a
transaction begins and ends, the placeholder style it really speaks, the two DDL words that
differ between engines (:class:`Dialect`), and turning driver errors into :class:`StoreError`.
SQLite (``sqlite.py``) is the one backend today; PostgreSQL slots in as a second module that
implements these two classes, with no change to the domain.

Every operation is one transaction: :meth:`Store.write` or :meth:`Store.read` is entered once
per administrative command or per service batch, and either everything in it is committed or
nothing is.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:
    from collections.abc import Hashable, Iterable, Sequence
    from contextlib import AbstractAsyncContextManager

Row: TypeAlias = dict[str, Any]
"""One result row, column name → value (int, str, bytes or None)."""

Params: TypeAlias = "Sequence[object]"

IN_LIST_CHUNK = 500
"""How many values one ``IN (...)`` list carries (well under every engine's parameter limit)."""


class StoreError(Exception):
    """The database could not do what was asked; the message says what and, if known, why."""


class ConstraintError(StoreError):
    """A write broke a uniqueness, foreign-key or check constraint of the schema."""


class SchemaError(StoreError):
    """The database's schema is not one this version of smartlic can use."""


@dataclass(frozen=True, slots=True)
class Dialect:
    """The few DDL words that differ between engines, substituted into migrations."""

    name: str
    id_column: str
    """An auto-assigned integer primary key whose values are never reused."""
    bytes_type: str

    def render(self, ddl: str) -> str:
        return ddl.replace("{id}", self.id_column).replace("{bytes}", self.bytes_type)


@dataclass(frozen=True, slots=True, kw_only=True)
class Versions:
    """Versions of the database, so that a process may keep what it read between transactions.

    A later transaction's :attr:`start` equals an earlier one's :attr:`end` exactly when the
    earlier one committed and no other transaction committed in between — of this store or of
    any other connection to the database. While that holds, what the process made of the
    database in the earlier transaction is still the database's truth.
    """

    start: Hashable
    """The version this transaction sees."""
    end: Hashable
    """The version it leaves if it commits (a write that rolls back leaves :attr:`start`)."""


class Transaction(abc.ABC):
    """One open transaction: statements run in order, all committed together or none."""

    @abc.abstractmethod
    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement; the number of rows it changed."""

    @abc.abstractmethod
    async def execute_many(self, sql: str, rows: Iterable[Params]) -> None:
        """Run one statement once per parameter row, in one round trip (none for no rows)."""

    @abc.abstractmethod
    async def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        """Run a query (or a statement with ``RETURNING``); every row."""

    @abc.abstractmethod
    async def versions(self) -> Versions:
        """Where this transaction stands in the database's history (one round trip)."""

    async def fetch_one(self, sql: str, params: Params = ()) -> Row | None:
        """The first row of a query, or ``None``."""
        rows = await self.fetch_all(sql, params)
        return rows[0] if rows else None

    async def fetch_in(self, sql: str, values: Sequence[object], params: Params = ()) -> list[Row]:
        """Run ``sql`` whose ``{in}`` is an ``IN`` list of ``values``, in bounded chunks.

        ``params`` come before the list's values. Used by the service's batches to load many
        devices or pools in a few round trips instead of one per item.
        """
        rows: list[Row] = []
        for start in range(0, len(values), IN_LIST_CHUNK):
            chunk = values[start : start + IN_LIST_CHUNK]
            marks = ", ".join("?" * len(chunk))
            rows.extend(await self.fetch_all(sql.replace("{in}", marks), (*params, *chunk)))
        return rows


class Store(abc.ABC):
    """A database holding the collector's state; the domain only sees transactions."""

    dialect: Dialect

    @abc.abstractmethod
    def write(self) -> AbstractAsyncContextManager[Transaction]:
        """A transaction that may write; writers are serialized, so read-then-write is safe."""

    @abc.abstractmethod
    def read(self) -> AbstractAsyncContextManager[Transaction]:
        """A read-only snapshot that does not block writers."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release the connection; the store cannot be used afterwards."""
