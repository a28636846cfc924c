"""Requests, like reports, count only within the clock-skew window (SPEC §4, *Replay and
freshness*): a (de)registration request kept and replayed later is refused, not carried out."""

from __future__ import annotations

from typing import TYPE_CHECKING

from smartlic.protocol import ErrorCode, ErrorNotice, Udi, open_message, parse_token

from .ingest_support import collector, decide, devices, refusals, uplink
from .support import Device, now

if TYPE_CHECKING:
    from .support import Site

LONG_AGO = 86_400


async def _uses(site: Site, token: str) -> int:
    token_id = parse_token(token).token_id_text
    (row,) = await site.query("SELECT uses FROM tokens WHERE token_id = ?", (token_id,))
    return int(row["uses"])


async def test_a_stale_registration_is_refused_with_the_collector_key_and_spends_no_use(
    collector_site: Site,
) -> None:
    token = await collector_site.token()
    device = Device(
        udi=Udi(product_id="C9300-24T", serial="Q1"),
        broker_url="",
        collector_key=collector_site.key,
    )
    async with collector(collector_site) as ingest:
        prepared = await decide(
            ingest, [uplink(device, device.registration(token, issued_at=now() - LONG_AGO))]
        )
    (item,) = prepared.items
    answer = open_message(item.answer or b"")
    assert [ErrorCode.CLOCK_SKEW] == refusals(prepared)
    assert isinstance(answer.message, ErrorNotice)
    assert collector_site.key.public == answer.message.collector_key
    assert (0, []) == (
        await _uses(collector_site, token),
        await collector_site.query("SELECT * FROM devices"),
    )


async def test_a_stale_deregistration_is_refused_and_the_device_stays_registered(
    collector_site: Site,
) -> None:
    (device,) = await devices(collector_site, "Q2")
    stale, _ = device.deregistration_bytes(issued_at=now() - LONG_AGO)
    async with collector(collector_site) as ingest:
        prepared = await decide(ingest, [uplink(device, stale)])
    assert [ErrorCode.CLOCK_SKEW] == refusals(prepared)
    assert [{"state": "registered"}] == await collector_site.query("SELECT state FROM devices")
