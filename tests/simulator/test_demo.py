"""``smartlic-sim demo`` on the embedded broker: what a machine without Mosquitto gets."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import pytest
from smartlic.simulator.demo import demo, demo_options

from .sim_support import assert_clean

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


async def test_the_demo_plays_the_growth_story_on_amqtt_with_mqtt_3_1_1(tmp_path: Path) -> None:
    pytest.importorskip("amqtt")
    out = io.StringIO()
    options = demo_options(
        devices=60, broker=None, broker_kind="amqtt", stream=out, workdir=tmp_path, progress=False
    )
    report = await demo(options)
    assert_clean(report)
    assert ("amqtt", "3.1.1") == (report.broker, report.protocol)
    text = out.getvalue()
    steps = [line for line in text.splitlines() if line.startswith("── ")]
    assert 6 == len(steps), text
    assert "PartnerCo delivered order PO-ACME-P into Engineering" in text
