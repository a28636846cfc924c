"""The simulator's infrastructure failing: a run that cannot be made says so (exit 3), in one
line, rather than a traceback read as a failed check (exit 1)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from smartlic.mqtt.broker import BrokerError, MosquittoBroker, free_port
from smartlic.mqtt.url import BrokerAddress
from smartlic.protocol import Topics
from smartlic.simulator.clock import VirtualClock
from smartlic.simulator.infra import InfraError, OwnMosquitto, read_clock

if TYPE_CHECKING:
    from pathlib import Path


def test_a_mosquitto_that_does_not_start_is_an_infrastructure_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(_broker: MosquittoBroker) -> None:
        raise BrokerError("mosquitto did not listen on 1")

    monkeypatch.setattr(MosquittoBroker, "start", refuse)

    with pytest.raises(InfraError, match="cannot start mosquitto: mosquitto did not listen"):
        OwnMosquitto(tmp_path).start()


async def test_an_unreachable_broker_is_an_infrastructure_error_when_reading_the_clock() -> None:
    with pytest.raises(InfraError, match="cannot reach the broker"):
        await read_clock(
            BrokerAddress(host="127.0.0.1", port=free_port()),
            topics=Topics(),
            protocol="5",
            fingerprint=bytes(32),
            clock=VirtualClock(scale=60),
            probe_id="probe",
        )
