"""Batches overlap: the next one is parsed and verified while this one is decided.

With one message per batch, messages sent back to back are consecutive batches, so each is
prepared while the one before it is decided; these tests pin down what that must not change.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from smartlic.protocol import Authorization, ErrorNotice, RegistrationResult

from .conftest import running_service

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from smartlic.collector.service.service import CollectorService
    from smartlic.mqtt.broker import MosquittoBroker

    from .support import MakeDevice, Site

pytestmark = [pytest.mark.usefixtures("one_message_batches"), pytest.mark.timeout(60)]
TAG = "network-advantage"


@pytest.fixture
async def one_message_batches(
    collector_site: Site, mosquitto: MosquittoBroker
) -> AsyncIterator[CollectorService]:
    async with running_service(collector_site, mosquitto, batch_size=1) as running:
        yield running


async def test_reports_sent_back_to_back_are_answered_in_order_and_counted_once(
    collector_site: Site, make_device: MakeDevice
) -> None:
    await collector_site.deposit("PO-1", quantity=10)
    device = await make_device()
    await device.register(await collector_site.token())
    for count in (1, 2, 3, 4, 5):
        await device.send(device.report_bytes({TAG: count}))

    answers = [await device.expect(_answering(seq)) for seq in (1, 2, 3, 4, 5)]

    assert all(isinstance(answer, Authorization) for answer in answers)
    assert [1, 2, 3, 4, 5] == [answer.tags[TAG].in_use for answer in answers]
    assert 5 == await collector_site.in_use()


async def test_a_report_right_behind_a_new_registration_is_verified_with_the_new_key(
    collector_site: Site, make_device: MakeDevice
) -> None:
    """The batch after a registration is prepared only once the registration is decided: a
    device registering again with a new key must not have its next report checked against
    the key the collector remembered from before."""
    await collector_site.deposit("PO-1", quantity=10)
    token = await collector_site.token()
    before = await make_device("C9300-24T:FOC55555")
    await before.register(token)
    assert isinstance(await before.report({TAG: 1}), Authorization)
    await collector_site.deregister("C9300-24T:FOC55555")
    await before.expect(lambda m: isinstance(m, ErrorNotice))
    await before.close()
    renewed = await make_device("C9300-24T:FOC55555")

    await renewed.send(renewed.registration(token))
    await renewed.send(renewed.report_bytes({TAG: 2}))

    assert isinstance(await renewed.expect(), RegistrationResult)
    answer = await renewed.expect(lambda m: getattr(m, "in_reply_to", None) == 1)
    assert isinstance(answer, Authorization)
    assert 2 == await collector_site.in_use()


def _answering(seq: int) -> Callable[[object], bool]:
    return lambda message: getattr(message, "in_reply_to", None) == seq
