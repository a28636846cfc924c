"""The collector's store: portable SQL behind one narrow interface (see ``backend.py``).

``open_store(path)`` gives a :class:`Store`; the domain enters ``store.write()`` or
``store.read()`` once per operation and runs its statements on the :class:`Transaction`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from smartlic.collector.store.backend import (
    ConstraintError,
    Row,
    SchemaError,
    Store,
    StoreError,
    Transaction,
    Versions,
)
from smartlic.collector.store.sqlite import SqliteStore

if TYPE_CHECKING:
    from pathlib import Path

__all__ = [
    "ConstraintError",
    "Row",
    "SchemaError",
    "SqliteStore",
    "Store",
    "StoreError",
    "Transaction",
    "Versions",
    "open_store",
]


async def open_store(path: Path, *, create: bool = False) -> Store:
    """The store at ``path`` (SQLite today), its schema migrated to the latest version."""
    return await SqliteStore.open(path, create=create)
