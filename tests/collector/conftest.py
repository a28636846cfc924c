"""Fixtures for the collector's tests (helpers are in ``collector_support.py``)."""

from __future__ import annotations

import asyncio
import shutil
from typing import TYPE_CHECKING

import pytest
from smartlic.collector.store import open_store

from .collector_support import Site, build_site

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path


@pytest.fixture(scope="session")
def site_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The initialised site, built once; each test gets a copy of the file."""
    path = tmp_path_factory.mktemp("template") / "site.db"
    asyncio.run(build_site(path))
    return path


@pytest.fixture
def site_db(site_template: Path, tmp_path: Path) -> Path:
    path = tmp_path / "collector.db"
    shutil.copyfile(site_template, path)
    path.chmod(0o600)
    return path


@pytest.fixture
async def site(site_db: Path) -> AsyncIterator[Site]:
    store = await open_store(site_db)
    try:
        yield Site(store)
    finally:
        await store.close()
