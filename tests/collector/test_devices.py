"""Devices: registration with a token, counts, moves, deregistration, and the pool counters."""

from __future__ import annotations

import random

import pytest
from smartlic.collector.changes import ChangeKind, changes_since
from smartlic.collector.device_admin import deregister_device, list_devices, move_device
from smartlic.collector.devices import (
    CountsUpdate,
    apply_reports,
    consumers,
    find_devices,
    latest_counts,
    register_device,
    reserve_notice_seqs,
    told_statuses,
)
from smartlic.collector.errors import NotFound, Refused
from smartlic.collector.orders import OrderLine, deposit_order
from smartlic.collector.receipts import (
    AcceptedReport,
    DeadLetter,
    add_dead_letters,
    find_accepted,
    recent_dead_letters,
    save_accepted,
)
from smartlic.collector.tokens import create_token
from smartlic.protocol import Algorithm, ComplianceStatus, ErrorCode, RegistrationToken, Udi

from .collector_support import COLLECTOR_KEY, NOW, Site, device_key, udi_of

NA = "network-advantage"
UDI = Udi.parse("ISR4331/K9:FOC1234X")


async def _token(site: Site, *, max_uses: int = 5) -> RegistrationToken:
    _, token = await site.run(
        create_token,
        account_name="ACME",
        va_name="Engineering",
        max_uses=max_uses,
        now=NOW,
        entropy=random.Random(3).randbytes,  # noqa: S311 -- reproducible, not secret
    )
    assert isinstance(token, RegistrationToken)
    return token


async def _register(site: Site, token: RegistrationToken, key_seed: str = "k1") -> tuple[str, bool]:
    async with site.store.write() as tx:
        record, new = await register_device(
            tx,
            udi=UDI,
            algorithm=Algorithm.ED25519,
            public_key=device_key(key_seed).public.raw,
            token=token,
            collector_fingerprint=COLLECTOR_KEY.public.fingerprint,
            now=NOW,
        )
    return record.va_name, new


async def _pool(site: Site, va: str, tag: str = NA) -> int:
    va_id = await site.va_id("ACME", va)
    async with site.store.read() as tx:
        row = await tx.fetch_one(
            "SELECT in_use FROM pool_usage WHERE va_id = ? AND tag = ?", (va_id, tag)
        )
    return 0 if row is None else int(row["in_use"])


async def test_a_device_registers_into_its_tokens_va(site: Site) -> None:
    assert ("Engineering", True) == await _register(site, await _token(site))


async def test_registering_again_with_the_same_key_spends_no_token_use(site: Site) -> None:
    token = await _token(site, max_uses=1)
    await _register(site, token)
    assert ("Engineering", False) == await _register(site, token)


async def test_a_registered_device_with_another_key_is_refused(site: Site) -> None:
    token = await _token(site)
    await _register(site, token, "k1")
    with pytest.raises(Refused, match="deregister it first") as refused:
        await _register(site, token, "k2")
    assert ErrorCode.ALREADY_REGISTERED == refused.value.code


async def test_a_deregistered_device_can_register_with_a_new_key(site: Site) -> None:
    token = await _token(site)
    await _register(site, token, "k1")
    await site.report(UDI.device_id, {NA: 2})
    await site.run(deregister_device, account_name="ACME", udi=str(UDI), now=NOW)
    await _register(site, token, "k2")
    device = await site.device(UDI.device_id)
    assert (device_key("k2").public.raw, {}, 0) == (
        device.public_key,
        dict(device.counts),
        device.last_seq,
    )


async def test_notice_numbers_keep_growing_across_re_registration(site: Site) -> None:
    token = await _token(site)
    await _register(site, token, "k1")
    device = await site.device(UDI.device_id)
    async with site.store.write() as tx:
        await reserve_notice_seqs(tx, {device.pk: 3})
    await site.run(deregister_device, account_name="ACME", udi=str(UDI), now=NOW)
    await _register(site, token, "k2")
    async with site.store.write() as tx:
        last = await reserve_notice_seqs(tx, {device.pk: 1})
    assert {device.pk: 4} == last


async def test_the_status_told_is_kept_until_another_compliance_notice_is_numbered(
    site: Site,
) -> None:
    """An error notice or a result numbered later says nothing of compliance: it keeps it."""
    token = await _token(site)
    await _register(site, token, "k1")
    device = await site.device(UDI.device_id)
    out = ComplianceStatus.OUT_OF_COMPLIANCE
    async with site.store.write() as tx:
        never = await told_statuses(tx, [device.pk])
        await reserve_notice_seqs(tx, {device.pk: 1}, {device.pk: out})
        await reserve_notice_seqs(tx, {device.pk: 2})
        kept = await told_statuses(tx, [device.pk])
    assert ({}, {device.pk: out}) == (never, kept)


async def test_a_report_sets_the_devices_counts_and_its_pool(site: Site) -> None:
    [device] = await site.register("ACME", "Engineering", "S1")
    await site.report(device, {NA: 3, "dna": 1})
    assert ({NA: 3, "dna": 1}, 3) == (
        dict((await site.device(device)).counts),
        await _pool(site, "Engineering"),
    )


def test_a_tag_left_out_of_a_report_keeps_its_last_count() -> None:
    assert {"a": 1, "b": 5} == latest_counts({"a": 2, "b": 5}, {"a": 1})


def test_a_count_of_zero_removes_the_tag() -> None:
    assert {"b": 5} == latest_counts({"a": 2, "b": 5}, {"a": 0})


async def test_one_device_twice_in_a_batch_counts_once_with_its_last_report(site: Site) -> None:
    [device_id] = await site.register("ACME", "Engineering", "S1")
    async with site.store.write() as tx:
        device = (await find_devices(tx, [device_id]))[device_id]
        applied = await apply_reports(
            tx,
            [
                CountsUpdate(device=device, seq=1, received_at=NOW, counts={NA: 5}),
                CountsUpdate(device=device, seq=2, received_at=NOW, counts={NA: 2}),
            ],
        )
    assert ({(device.va_id, NA): 2}, 2) == (
        dict(applied.deltas),
        (await site.device(device_id)).last_seq,
    )


async def test_moving_a_device_moves_its_counts_between_pools(site: Site) -> None:
    [device] = await site.register("ACME", "Engineering", "S1")
    await site.report(device, {NA: 3})
    await site.run(move_device, account_name="ACME", udi=udi_of(device), to_va="DEFAULT", now=NOW)
    assert (0, 3) == (await _pool(site, "Engineering"), await _pool(site, "DEFAULT"))


async def test_moving_a_device_is_announced_on_the_change_feed(site: Site) -> None:
    [device] = await site.register("ACME", "Engineering", "S1")
    await site.run(move_device, account_name="ACME", udi=udi_of(device), to_va="DEFAULT", now=NOW)
    async with site.store.read() as tx:
        [change] = await changes_since(tx, 0)
    ids = {await site.va_id("ACME", "Engineering"), await site.va_id("ACME", "DEFAULT")}
    assert (ChangeKind.DEVICE_MOVE, ids, (device,)) == (
        change.kind,
        set(change.va_ids),
        change.devices,
    )


async def test_moving_a_device_to_its_own_va_is_refused(site: Site) -> None:
    [device] = await site.register("ACME", "Engineering", "S1")
    with pytest.raises(Refused, match="already in Engineering"):
        await site.run(
            move_device, account_name="ACME", udi=udi_of(device), to_va="Engineering", now=NOW
        )


async def test_a_device_of_another_account_is_not_found(site: Site) -> None:
    [device] = await site.register("ACME", "Engineering", "S1")
    with pytest.raises(Refused, match="partner holding account"):
        await site.run(deregister_device, account_name="PartnerCo", udi=udi_of(device), now=NOW)


async def test_an_unknown_udi_is_not_found(site: Site) -> None:
    with pytest.raises(NotFound, match="ACME has no device"):
        await site.run(deregister_device, account_name="ACME", udi="X:Y", now=NOW)


async def test_deregistering_takes_the_devices_counts_out_of_its_pool(site: Site) -> None:
    [one, two] = await site.register("ACME", "Engineering", "S1", "S2")
    await site.report(one, {NA: 3})
    await site.report(two, {NA: 4})
    await site.run(deregister_device, account_name="ACME", udi=udi_of(one), now=NOW)
    assert 4 == await _pool(site, "Engineering")


async def test_deregistering_twice_is_refused(site: Site) -> None:
    [device] = await site.register("ACME", "Engineering", "S1")
    await site.run(deregister_device, account_name="ACME", udi=udi_of(device), now=NOW)
    with pytest.raises(Refused, match="not registered"):
        await site.run(deregister_device, account_name="ACME", udi=udi_of(device), now=NOW)


async def test_the_device_list_shows_each_devices_compliance(site: Site) -> None:
    await site.run(
        deposit_order,
        number="PO-1",
        ordered_on=NOW,
        lines=[OrderLine(tag=NA, quantity=3)],
        account_name="ACME",
        va_name="Engineering",
        now=NOW,
    )
    [small, big, idle] = await site.register("ACME", "Engineering", "S1", "S2", "S3")
    await site.report(small, {NA: 1})
    await site.report(big, {NA: 5, "dna": 0})
    views = await site.run(list_devices, account_name="ACME", va_name=None, now=NOW)
    short, ok = ComplianceStatus.OUT_OF_COMPLIANCE, ComplianceStatus.IN_COMPLIANCE
    assert {small: short, big: short, idle: ok} == {v.device.device_id: v.status for v in views}


async def test_consumers_are_the_vas_devices_using_the_tag(site: Site) -> None:
    [user, other, _] = await site.register("ACME", "Engineering", "S1", "S2", "S3")
    await site.report(user, {NA: 1})
    await site.report(other, {"dna": 1})
    va_id = await site.va_id("ACME", "Engineering")
    async with site.store.read() as tx:
        found = await consumers(tx, va_id, [NA])
    assert [user] == [d.device_id for d in found]


async def test_an_accepted_report_is_found_again_by_device_and_seq(site: Site) -> None:
    [device_id] = await site.register("ACME", "Engineering", "S1")
    device = await site.device(device_id)
    report = AcceptedReport(
        device_pk=device.pk, seq=1, digest=b"d" * 32, answer=b"ans", accepted_at=NOW
    )
    async with site.store.write() as tx:
        await save_accepted(tx, [report])
        found = await find_accepted(tx, [(device.pk, 1), (device.pk, 2)])
    assert {(device.pk, 1): report} == found


async def test_dead_letters_are_kept_raw(site: Site) -> None:
    letter = DeadLetter(received_at=NOW, topic="slic/d/x/up", payload=b"\xff\x00", reason="garbage")
    async with site.store.write() as tx:
        await add_dead_letters(tx, [letter])
        assert [letter] == await recent_dead_letters(tx)
