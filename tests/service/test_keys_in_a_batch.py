"""Keys that change inside one batch: each message is checked against the key its device has
at that point of the batch, in arrival order, as if the messages came one by one."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from smartlic.collector.service import verifying
from smartlic.protocol import (
    Authorization,
    ErrorCode,
    KeyType,
    RegistrationResult,
    SigningKey,
    open_message,
)

from .ingest_support import collector, decide, devices, newcomer, refusals, report, uplink

if TYPE_CHECKING:
    import pytest

    from .support import Site

TAG = "network-advantage"


def new_key() -> SigningKey:
    return SigningKey.from_seed(KeyType.ED25519, secrets.token_bytes(32))


async def test_a_report_behind_its_devices_registration_is_verified_with_the_registered_key(
    collector_site: Site,
) -> None:
    await collector_site.deposit("PO-1", quantity=10)
    token = await collector_site.token()
    device = newcomer(collector_site, "K1")
    async with collector(collector_site) as ingest:
        prepared = await decide(
            ingest, [uplink(device, device.registration(token)), report(device, {TAG: 2})]
        )
    answers = [open_message(item.answer or b"").message for item in prepared.items]
    assert [None, None] == refusals(prepared)
    assert [RegistrationResult, Authorization] == [type(a) for a in answers]
    assert 2 == await collector_site.in_use()


async def test_a_device_registering_a_new_key_has_its_next_report_checked_with_it(
    collector_site: Site,
) -> None:
    token = await collector_site.token()
    (device,) = await devices(collector_site, "K2")
    leave, _ = device.deregistration_bytes()
    async with collector(collector_site) as ingest:
        await decide(ingest, [uplink(device, leave)])
        device.key = new_key()
        prepared = await decide(
            ingest, [uplink(device, device.registration(token)), report(device, {TAG: 1})]
        )
    assert [None, None] == refusals(prepared)
    assert 1 == await collector_site.in_use()


async def test_a_report_signed_with_a_key_whose_registration_failed_is_refused(
    collector_site: Site,
) -> None:
    """The new key's registration is refused (the device is still registered): the report
    signed with that key is not the device's."""
    token = await collector_site.token()
    (device,) = await devices(collector_site, "K3")
    device.key = new_key()
    async with collector(collector_site) as ingest:
        prepared = await decide(
            ingest, [uplink(device, device.registration(token)), report(device, {TAG: 1})]
        )
    assert [ErrorCode.ALREADY_REGISTERED, ErrorCode.BAD_SIGNATURE] == refusals(prepared)
    assert 0 == await collector_site.in_use()


async def test_a_deregistration_signed_with_the_key_just_replaced_is_refused(
    collector_site: Site,
) -> None:
    """Whoever holds a device's old key cannot undo the registration that replaced it."""
    token = await collector_site.token()
    (device,) = await devices(collector_site, "K4")
    leave, _ = device.deregistration_bytes()
    leave_again, _ = device.deregistration_bytes()
    old_key, device.key = device.key, new_key()
    register = uplink(device, device.registration(token))
    device.key = old_key
    async with collector(collector_site) as ingest:
        prepared = await decide(
            ingest, [uplink(device, leave), register, uplink(device, leave_again)]
        )
    rows = await collector_site.query("SELECT state FROM devices")
    assert [None, None, ErrorCode.BAD_SIGNATURE] == refusals(prepared)
    assert [{"state": "registered"}] == rows


async def test_a_device_given_a_new_key_by_another_collector_is_verified_with_it(
    collector_site: Site,
) -> None:
    """The first collector still holds the old key in memory; the signature that fails with
    it is checked again with the key now stored."""
    await collector_site.deposit("PO-1", quantity=10)
    token = await collector_site.token()
    (device,) = await devices(collector_site, "K6")
    async with collector(collector_site) as first, collector(collector_site) as second:
        await decide(first, [report(device, {TAG: 1})])
        await decide(second, [uplink(device, device.deregistration_bytes()[0])])
        device.key = new_key()
        await decide(second, [uplink(device, device.registration(token))])
        prepared = await decide(first, [report(device, {TAG: 2})])
    assert [None] == refusals(prepared)
    assert 2 == await collector_site.in_use()


async def test_a_report_signed_with_a_key_another_collector_replaced_is_refused(
    collector_site: Site,
) -> None:
    token = await collector_site.token()
    (device,) = await devices(collector_site, "K7")
    old_key = device.key
    async with collector(collector_site) as first, collector(collector_site) as second:
        await decide(first, [report(device, {TAG: 1})])
        await decide(second, [uplink(device, device.deregistration_bytes()[0])])
        device.key = new_key()
        await decide(second, [uplink(device, device.registration(token))])
        device.key = old_key
        prepared = await decide(first, [report(device, {TAG: 2})])
    assert [ErrorCode.BAD_SIGNATURE] == refusals(prepared)
    assert 0 == await collector_site.in_use()


async def test_a_full_key_cache_forgets_no_key_of_the_batch_it_loads_for(
    collector_site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three keys stand for the 200,000 kept: loading the fourth device's once emptied the
    cache under the batch, and the report of a device already in it became a dead letter."""
    monkeypatch.setattr(verifying, "KEYS_KEPT", 3)
    await collector_site.deposit("PO-1", quantity=100)
    a, b, c, newcomer_ = await devices(collector_site, "C1", "C2", "C3", "C4")
    async with collector(collector_site) as ingest:
        await decide(ingest, [report(a, {TAG: 1}), report(b, {TAG: 1}), report(c, {TAG: 1})])
        prepared = await decide(ingest, [report(a, {TAG: 2}), report(newcomer_, {TAG: 1})])

    assert [None, None] == refusals(prepared)
    assert [] == await collector_site.dead_letters()
    assert 5 == await collector_site.in_use()


async def test_a_report_signed_with_the_key_a_refused_registration_left_is_accepted(
    collector_site: Site,
) -> None:
    """One by one, the registration of a new key is refused and the report, signed with the
    key still registered, accepted; in one batch the report was checked with the new key
    alone, and refused as badly signed."""
    await collector_site.deposit("PO-1", quantity=10)
    token = await collector_site.token()
    (device,) = await devices(collector_site, "K9")
    old_key, device.key = device.key, new_key()
    register = uplink(device, device.registration(token))
    device.key = old_key
    async with collector(collector_site) as ingest:
        prepared = await decide(ingest, [register, report(device, {TAG: 2})])

    assert [ErrorCode.ALREADY_REGISTERED, None] == refusals(prepared)
    assert 2 == await collector_site.in_use()


async def test_a_report_behind_many_refused_registrations_is_checked_with_the_key_kept(
    collector_site: Site,
) -> None:
    """The key the device had is tried first, however many new keys the batch offered."""
    await collector_site.deposit("PO-1", quantity=10)
    token = await collector_site.token()
    (device,) = await devices(collector_site, "K10")
    old_key = device.key
    registrations = []
    for _ in range(5):
        device.key = new_key()
        registrations.append(uplink(device, device.registration(token)))
    device.key = old_key
    async with collector(collector_site) as ingest:
        prepared = await decide(ingest, [*registrations, report(device, {TAG: 1})])

    assert [*[ErrorCode.ALREADY_REGISTERED] * 5, None] == refusals(prepared)
