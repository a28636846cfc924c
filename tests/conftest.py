"""Fixtures shared by every test folder.

``mosquitto``: a real Mosquitto of the test's own on a free loopback port (never the shared
1883 one), with persistence in the test's tmp dir so it can be restarted or killed mid-test.
Tests that use it are marked ``broker`` automatically, so ``-m broker`` / ``-m "not broker"``
select them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from smartlic.mqtt.broker import MosquittoBroker, find_mosquitto

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "mosquitto" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.broker)


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[MosquittoBroker]:
    if find_mosquitto() is None:
        pytest.fail("mosquitto is missing: run scripts/bootstrap (or apt-get install mosquitto)")
    broker = MosquittoBroker(tmp_path / "mosquitto")
    broker.start()
    try:
        yield broker
    finally:
        broker.kill()
