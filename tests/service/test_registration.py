"""Registration through the running service, against a real Mosquitto."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

import pytest
from smartlic.collector.errors import Refused
from smartlic.protocol import (
    ErrorCode,
    ErrorNotice,
    KeyType,
    RegistrationResult,
    RegistrationToken,
    SigningKey,
    open_message,
    parse_token,
)

from .support import DAY, Site, now

if TYPE_CHECKING:
    from .support import MakeDevice

pytestmark = [pytest.mark.usefixtures("service"), pytest.mark.timeout(60)]


async def test_a_valid_token_registers_the_device_into_its_virtual_account(
    collector_site: Site, make_device: MakeDevice
) -> None:
    """The signed result names the account and VA, and carries the collector's key."""
    device = await make_device()
    token = await collector_site.token(va="Engineering")

    result = await device.register(token)

    assert isinstance(result, RegistrationResult)
    assert ("ACME", "Engineering") == (result.smart_account, result.virtual_account)
    assert collector_site.key.public == result.collector_key
    rows = await collector_site.query("SELECT state, udi FROM devices")
    assert [{"state": "registered", "udi": str(device.udi)}] == rows


async def test_the_first_reply_verifies_against_the_token_fingerprint_alone(
    collector_site: Site, make_device: MakeDevice
) -> None:
    """A new device has only the token; the reply's key must hash to its fingerprint."""
    device = await make_device()
    token = await collector_site.token()
    await device.register(token)

    opened = open_message(device.raw[-1].payload)
    key = opened.verify_first_reply(parse_token(token).collector_fingerprint)

    assert collector_site.key.public == key


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        ("expired", ErrorCode.TOKEN_EXPIRED),
        ("revoked", ErrorCode.TOKEN_REVOKED),
        ("used-up", ErrorCode.TOKEN_USED_UP),
        ("unknown", ErrorCode.TOKEN_UNKNOWN),
        ("other-collector", ErrorCode.TOKEN_UNKNOWN),
    ],
)
async def test_an_unusable_token_is_refused_with_its_reason(
    collector_site: Site, make_device: MakeDevice, setup: str, expected: ErrorCode
) -> None:
    """Each refusal is a signed error notice answering the request, verifiable by the device."""
    device = await make_device()
    if setup == "expired":
        token = await collector_site.token(expires_days=1, created=now() - 2 * DAY)
    elif setup == "revoked":
        token = await collector_site.token()
        await collector_site.revoke(token)
    elif setup == "used-up":
        token = await collector_site.token(max_uses=1)
        assert isinstance(await (await make_device()).register(token), RegistrationResult)
    else:
        fingerprint = (
            collector_site.key.public.fingerprint if setup == "unknown" else secrets.token_bytes(32)
        )
        token = str(
            RegistrationToken(
                token_id=secrets.token_bytes(8),
                secret=secrets.token_bytes(16),
                collector_fingerprint=fingerprint,
            )
        )

    answer = await device.register(token)

    assert isinstance(answer, ErrorNotice)
    assert expected == answer.code
    assert collector_site.key.public == answer.collector_key
    assert [] == await collector_site.query(
        "SELECT id FROM devices WHERE udi = ?", (str(device.udi),)
    )


async def test_a_holding_account_can_never_issue_a_registration_token(
    collector_site: Site,
) -> None:
    """No token can name a holding account (and the schema cannot hold one), so no device
    can ever register — or consume — there."""
    await collector_site.holding("PartnerCo")

    with pytest.raises(Refused, match="holding account"):
        await collector_site.token(account="PartnerCo")


async def test_a_request_not_signed_by_the_key_it_registers_is_refused(
    collector_site: Site, make_device: MakeDevice
) -> None:
    """Proof of possession: the new key itself must sign the request."""
    device = await make_device()
    token = await collector_site.token()
    impostor = SigningKey.from_seed(KeyType.ED25519, secrets.token_bytes(32))

    await device.send(device.registration(token, key=impostor))
    answer = await device.expect()

    assert isinstance(answer, ErrorNotice)
    assert ErrorCode.PROOF_OF_POSSESSION == answer.code
    uses = await collector_site.query("SELECT uses FROM tokens")
    assert [{"uses": 0}] == uses


async def test_a_registered_device_cannot_be_taken_over_with_another_key(
    collector_site: Site, make_device: MakeDevice
) -> None:
    """A second registration of the UDI with a different key needs a deregistration first."""
    token = await collector_site.token()
    first = await make_device("C9300-24T:FOC99999")
    assert isinstance(await first.register(token), RegistrationResult)
    await first.close()
    second = await make_device("C9300-24T:FOC99999")

    answer = await second.register(token)

    assert isinstance(answer, ErrorNotice)
    assert ErrorCode.ALREADY_REGISTERED == answer.code


async def test_registering_again_with_the_same_key_is_a_harmless_retry(
    collector_site: Site, make_device: MakeDevice
) -> None:
    """A device that never saw its result may ask again; no token use is spent twice."""
    device = await make_device()
    token = await collector_site.token(max_uses=1)

    first = await device.register(token)
    second = await device.register(token)

    assert isinstance(first, RegistrationResult)
    assert isinstance(second, RegistrationResult)
    assert second.notice_seq > first.notice_seq


async def test_a_device_deregistered_by_an_administrator_may_register_with_a_new_key(
    collector_site: Site, make_device: MakeDevice
) -> None:
    token = await collector_site.token()
    device = await make_device("C9300-24T:FOC77777")
    await device.register(token)
    await collector_site.deregister("C9300-24T:FOC77777")
    await device.expect(lambda m: isinstance(m, ErrorNotice))
    await device.close()
    renewed = await make_device("C9300-24T:FOC77777")

    assert isinstance(await renewed.register(token), RegistrationResult)
