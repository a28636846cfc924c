"""Registration tokens: creation, listing, revocation, and redemption by a registering device."""

from __future__ import annotations

import random
from typing import Any

import pytest
from smartlic.collector.errors import InvalidRequest, NotFound, Refused
from smartlic.collector.site import create_smart_account
from smartlic.collector.tokens import (
    StoredToken,
    TokenStatus,
    create_token,
    list_tokens,
    redeem_token,
    revoke_token,
    token_status,
)
from smartlic.protocol import ErrorCode, RegistrationToken, parse_token

from .collector_support import COLLECTOR_KEY, DAY, NOW, Site


def _entropy(seed: int = 7) -> random.Random:
    return random.Random(seed)  # noqa: S311 -- reproducible token bytes, not secrets


async def _create(site: Site, **options: Any) -> tuple[StoredToken, RegistrationToken]:
    settings: dict[str, Any] = {
        "account_name": "ACME",
        "va_name": "Engineering",
        "now": NOW,
        "entropy": _entropy().randbytes,
        **options,
    }
    created: tuple[StoredToken, RegistrationToken] = await site.run(create_token, **settings)
    return created


async def _redeem(site: Site, token: RegistrationToken, *, at: int = NOW) -> StoredToken:
    async with site.store.write() as tx:
        return await redeem_token(
            tx, token, collector_fingerprint=COLLECTOR_KEY.public.fingerprint, now=at
        )


async def test_a_token_string_embeds_the_collector_fingerprint(site: Site) -> None:
    _, token = await _create(site)
    assert COLLECTOR_KEY.public.fingerprint == parse_token(str(token)).collector_fingerprint


async def test_only_the_digest_of_the_secret_is_stored(site: Site) -> None:
    _, token = await _create(site)
    async with site.store.read() as tx:
        row = await tx.fetch_one("SELECT * FROM tokens")
    assert row is not None
    assert token.secret_digest == row["secret_digest"]
    assert token.secret not in b"".join(v for v in row.values() if isinstance(v, bytes))


async def test_a_token_defaults_to_the_default_va(site: Site) -> None:
    stored, _ = await _create(site, va_name=None)
    assert "DEFAULT" == stored.va_name


async def test_a_token_expires_after_the_days_asked(site: Site) -> None:
    stored, _ = await _create(site, expires_days=7)
    assert NOW + 7 * DAY == stored.expires_at


@pytest.mark.parametrize("days", [0, 366])
async def test_an_expiry_outside_1_to_365_days_is_refused(site: Site, days: int) -> None:
    with pytest.raises(InvalidRequest, match=r"1\.\.365 days"):
        await _create(site, expires_days=days)


@pytest.mark.parametrize("uses", [0, 1_000_000_001, 10**20])
async def test_uses_outside_1_to_a_billion_are_refused(site: Site, uses: int) -> None:
    """A number beyond SQLite's integers used to escape as an internal error."""
    with pytest.raises(InvalidRequest, match=r"1\.\.1,000,000,000 registrations"):
        await _create(site, max_uses=uses)


async def test_no_token_can_be_made_in_a_holding_account(site: Site) -> None:
    with pytest.raises(Refused, match="licenses can never be consumed") as refused:
        await _create(site, account_name="PartnerCo", va_name=None)
    assert ErrorCode.TOKEN_HOLDING_ACCOUNT == refused.value.code


async def test_tokens_are_listed_newest_first_with_their_status(site: Site) -> None:
    await _create(site, description="first")
    await site.run(
        create_token,
        account_name="ACME",
        va_name=None,
        now=NOW + 1,
        description="second",
        entropy=_entropy(8).randbytes,
    )
    tokens = await site.run(list_tokens, account_name="ACME")
    assert [("second", TokenStatus.ACTIVE), ("first", TokenStatus.ACTIVE)] == [
        (t.description, token_status(t, NOW + 1)) for t in tokens
    ]


async def test_a_revoked_token_is_listed_as_revoked(site: Site) -> None:
    _, token = await _create(site)
    await site.run(revoke_token, account_name="ACME", token_id=token.token_id_text, now=NOW)
    [listed] = await site.run(list_tokens, account_name="ACME")
    assert TokenStatus.REVOKED == token_status(listed, NOW)


async def test_revoking_a_token_of_another_account_is_refused(site: Site) -> None:
    _, token = await _create(site)
    await site.run(create_smart_account, name="Globex", admin_email="hank@globex.example", now=NOW)
    with pytest.raises(NotFound, match="Globex has no token"):
        await site.run(revoke_token, account_name="Globex", token_id=token.token_id_text, now=NOW)


async def test_redeeming_counts_one_use(site: Site) -> None:
    _, token = await _create(site, max_uses=3)
    redeemed = await _redeem(site, token)
    assert (1, "Engineering") == (redeemed.uses, redeemed.va_name)


async def test_a_used_up_token_is_refused(site: Site) -> None:
    _, token = await _create(site)
    await _redeem(site, token)
    with pytest.raises(Refused, match="used up") as refused:
        await _redeem(site, token)
    assert ErrorCode.TOKEN_USED_UP == refused.value.code


async def test_an_expired_token_is_refused(site: Site) -> None:
    _, token = await _create(site, expires_days=1)
    with pytest.raises(Refused, match="expired") as refused:
        await _redeem(site, token, at=NOW + DAY)
    assert ErrorCode.TOKEN_EXPIRED == refused.value.code


async def test_a_revoked_token_is_refused(site: Site) -> None:
    _, token = await _create(site)
    await site.run(revoke_token, account_name="ACME", token_id=token.token_id_text, now=NOW)
    with pytest.raises(Refused, match="revoked") as refused:
        await _redeem(site, token)
    assert ErrorCode.TOKEN_REVOKED == refused.value.code


async def test_a_token_with_a_wrong_secret_is_unknown(site: Site) -> None:
    _, token = await _create(site)
    forged = RegistrationToken(
        token_id=token.token_id, secret=bytes(16), collector_fingerprint=token.collector_fingerprint
    )
    with pytest.raises(Refused, match="unknown registration token") as refused:
        await _redeem(site, forged)
    assert ErrorCode.TOKEN_UNKNOWN == refused.value.code


async def test_a_token_made_for_another_collector_is_refused(site: Site) -> None:
    _, token = await _create(site)
    elsewhere = RegistrationToken(
        token_id=token.token_id, secret=token.secret, collector_fingerprint=bytes(32)
    )
    with pytest.raises(Refused, match="another collector"):
        await _redeem(site, elsewhere)


async def test_a_refused_redemption_writes_nothing(site: Site) -> None:
    _, token = await _create(site, expires_days=1)
    with pytest.raises(Refused):
        await _redeem(site, token, at=NOW + DAY)
    [listed] = await site.run(list_tokens, account_name="ACME")
    assert 0 == listed.uses


async def test_revoking_an_unknown_token_is_not_found(site: Site) -> None:
    with pytest.raises(NotFound):
        await site.run(revoke_token, account_name="ACME", token_id="00" * 8, now=NOW)
