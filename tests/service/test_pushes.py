"""Pushed notices: a pool's flip reaches every device whose status changed, unasked."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest
from smartlic.protocol import (
    Authorization,
    ErrorCode,
    ErrorNotice,
    Opened,
    OutOfComplianceNotice,
    open_message,
)

from .support import Device, Site, now

if TYPE_CHECKING:
    from collections.abc import Callable

    from .support import MakeDevice

pytestmark = [pytest.mark.usefixtures("service"), pytest.mark.timeout(60)]
TAG = "network-advantage"
PUSH_DEADLINE = 1.5
"""The goal is a push within 1 s of the change; the margin absorbs a loaded CI machine."""


def _pushed(kind: type) -> Callable[[object], bool]:
    return lambda m: isinstance(m, kind) and getattr(m, "in_reply_to", 0) is None


async def _reporting(site: Site, make_device: MakeDevice, count: int) -> Device:
    device = await make_device()
    await device.register(await site.token())
    await device.report({TAG: count})
    return device


async def test_a_deposit_that_covers_the_shortfall_pushes_authorizations(
    collector_site: Site, make_device: MakeDevice
) -> None:
    """The admin CLI runs in another process; its change reaches devices through the feed."""
    await collector_site.deposit("PO-1", quantity=1)
    short = await _reporting(collector_site, make_device, 2)

    started = time.monotonic()
    await collector_site.deposit("PO-2", quantity=5)
    notice = await short.expect(_pushed(Authorization), timeout=PUSH_DEADLINE)

    assert time.monotonic() - started < PUSH_DEADLINE
    assert 6 == notice.tags[TAG].entitled


async def test_another_devices_report_that_breaks_the_pool_pushes_to_its_neighbours(
    collector_site: Site, make_device: MakeDevice
) -> None:
    await collector_site.deposit("PO-1", quantity=3)
    quiet = await _reporting(collector_site, make_device, 2)
    greedy = await _reporting(collector_site, make_device, 0)

    answer = await greedy.report({TAG: 2})
    pushed = await quiet.expect(_pushed(OutOfComplianceNotice), timeout=PUSH_DEADLINE)

    assert isinstance(answer, OutOfComplianceNotice)
    assert 1 == pushed.tags[TAG].shortfall


async def test_a_device_not_consuming_the_short_tag_is_left_alone(
    collector_site: Site, make_device: MakeDevice
) -> None:
    await collector_site.deposit("PO-1", quantity=1)
    await collector_site.deposit("PO-2", tag="dna-essentials", quantity=5)
    bystander = await make_device()
    await bystander.register(await collector_site.token())
    await bystander.report({"dna-essentials": 1})
    await _reporting(collector_site, make_device, 3)

    assert [] == await bystander.silence()


async def test_a_device_still_short_on_another_tag_is_not_pushed_when_one_tag_recovers(
    collector_site: Site, make_device: MakeDevice
) -> None:
    await collector_site.deposit("PO-1", quantity=1)
    await collector_site.deposit("PO-2", tag="dna-essentials", quantity=1)
    device = await make_device()
    await device.register(await collector_site.token())
    assert isinstance(await device.report({TAG: 2, "dna-essentials": 2}), OutOfComplianceNotice)

    await collector_site.deposit("PO-3", quantity=5)

    assert [] == await device.silence()


async def test_a_license_transfer_that_leaves_a_va_short_pushes_out_of_compliance(
    collector_site: Site, make_device: MakeDevice
) -> None:
    await collector_site.deposit("PO-1", quantity=4)
    device = await _reporting(collector_site, make_device, 3)

    await collector_site.transfer(2, from_va="DEFAULT", to_va="Engineering")
    pushed = await device.expect(_pushed(OutOfComplianceNotice), timeout=PUSH_DEADLINE)

    assert (3, 2, 1) == (
        pushed.tags[TAG].in_use,
        pushed.tags[TAG].entitled,
        pushed.tags[TAG].shortfall,
    )


async def test_a_term_license_ending_pushes_out_of_compliance_by_time_alone(
    collector_site: Site, make_device: MakeDevice
) -> None:
    """Nothing happens but the clock: the term ends and the pool is short."""
    ends = now() + 2
    await collector_site.deposit("PO-1", quantity=5, term=(now() - 100, ends))
    device = await _reporting(collector_site, make_device, 2)

    pushed = await device.expect(_pushed(OutOfComplianceNotice), timeout=6)

    assert now() >= ends
    assert 0 == pushed.tags[TAG].entitled
    audit = await collector_site.query(
        "SELECT actor FROM audit_log WHERE action = 'compliance.change' ORDER BY seq DESC LIMIT 1"
    )
    assert [{"actor": "collector"}] == audit


async def test_an_administrative_deregistration_tells_the_device(
    collector_site: Site, make_device: MakeDevice
) -> None:
    await collector_site.deposit("PO-1", quantity=5)
    device = await _reporting(collector_site, make_device, 2)

    await collector_site.deregister(str(device.udi))
    notice = await device.expect(lambda m: isinstance(m, ErrorNotice), timeout=PUSH_DEADLINE)

    assert ErrorCode.NOT_REGISTERED == notice.code
    assert 0 == await collector_site.in_use()


async def test_a_deregistration_that_ends_a_shortfall_pushes_authorizations(
    collector_site: Site, make_device: MakeDevice
) -> None:
    await collector_site.deposit("PO-1", quantity=3)
    stays = await _reporting(collector_site, make_device, 2)
    leaves = await _reporting(collector_site, make_device, 2)
    await stays.expect(_pushed(OutOfComplianceNotice), timeout=PUSH_DEADLINE)

    await collector_site.deregister(str(leaves.udi))
    pushed = await stays.expect(_pushed(Authorization), timeout=PUSH_DEADLINE)

    assert 2 == pushed.tags[TAG].in_use


async def test_a_moved_device_is_told_its_new_virtual_account(
    collector_site: Site, make_device: MakeDevice
) -> None:
    await collector_site.deposit("PO-1", quantity=5)
    await collector_site.deposit("PO-2", quantity=5, va="Engineering")
    device = await _reporting(collector_site, make_device, 2)

    await collector_site.move(str(device.udi), "Engineering")
    pushed = await device.expect(_pushed(Authorization), timeout=PUSH_DEADLINE)

    assert "Engineering" == pushed.virtual_account
    assert 2 == await collector_site.in_use(va="Engineering")
    assert 0 == await collector_site.in_use(va="DEFAULT")


async def test_every_notice_a_device_gets_carries_a_higher_notice_seq(
    collector_site: Site, make_device: MakeDevice
) -> None:
    """Answers, pushes and errors share one counter per device, so order is never ambiguous."""
    await collector_site.deposit("PO-1", quantity=1)
    device = await _reporting(collector_site, make_device, 2)
    await collector_site.deposit("PO-2", quantity=5)
    await device.expect(_pushed(Authorization), timeout=PUSH_DEADLINE)
    await device.report({TAG: 1}, issued_at=now() - 3600)

    seqs = [int(getattr(o.message, "notice_seq", 0)) for o in _all(device)]
    assert sorted(seqs) == seqs
    assert len(set(seqs)) == len(seqs)


def _all(device: Device) -> list[Opened]:
    return [open_message(raw.payload) for raw in device.raw]
