"""Requests, like reports, are refused when stale or replayed (SPEC §4, *Replay and freshness*).

A (de)registration request issued outside the clock-skew window is refused, not carried out;
inside it, a copy of one carried out before is a retry while the device is in the state it left,
and a replay once that state has been undone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from smartlic.protocol import (
    ErrorCode,
    ErrorNotice,
    RegistrationResult,
    open_message,
    parse_token,
)

from .ingest_support import collector, decide, devices, newcomer, refusals, uplink
from .support import now

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
    device = newcomer(collector_site, "Q1")
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


async def test_a_registration_arriving_again_after_the_deregistration_is_refused(
    collector_site: Site,
) -> None:
    """Delivered out of order (two members of a share group): the device stays deregistered."""
    token = await collector_site.token()
    device = newcomer(collector_site, "Q3")
    join = uplink(device, device.registration(token))
    leave, _ = device.deregistration_bytes()
    async with collector(collector_site) as ingest:
        first = await decide(ingest, [join, uplink(device, leave)])
        again = await decide(ingest, [join])
    assert ([None, None], [ErrorCode.REPLAYED]) == (refusals(first), refusals(again))
    assert [{"state": "deregistered"}] == await collector_site.query("SELECT state FROM devices")


async def test_a_deregistration_arriving_again_after_a_new_registration_is_refused(
    collector_site: Site,
) -> None:
    token = await collector_site.token()
    (device,) = await devices(collector_site, "Q4")
    leave = uplink(device, device.deregistration_bytes()[0])
    async with collector(collector_site) as ingest:
        first = await decide(ingest, [leave, uplink(device, device.registration(token))])
        again = await decide(ingest, [leave])
    assert ([None, None], [ErrorCode.REPLAYED]) == (refusals(first), refusals(again))
    assert [{"state": "registered"}] == await collector_site.query("SELECT state FROM devices")


async def test_a_registration_arriving_again_while_it_holds_is_answered_as_a_retry(
    collector_site: Site,
) -> None:
    token = await collector_site.token()
    device = newcomer(collector_site, "Q5")
    join = uplink(device, device.registration(token))
    async with collector(collector_site) as ingest:
        first = await decide(ingest, [join])
        again = await decide(ingest, [join])
    answers = [open_message(p.items[0].answer or b"").message for p in (first, again)]
    assert ([None], [None]) == (refusals(first), refusals(again))
    assert [RegistrationResult, RegistrationResult] == [type(a) for a in answers]
    assert 1 == await _uses(collector_site, token)
