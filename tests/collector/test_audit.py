"""The audit log: every administrative action is in it, and any edit or deletion is detected."""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from smartlic.collector import audit
from smartlic.collector.audit import AuditEntry
from smartlic.collector.store import open_store
from smartlic.collector.virtual_accounts import rename_virtual_account

from .collector_support import ALICE, NOW, OPERATOR, Site


async def test_setting_up_a_site_is_audited_step_by_step(site: Site) -> None:
    async with site.store.read() as tx:
        records = await audit.entries(tx)
    assert [
        (OPERATOR, "site.init"),
        (OPERATOR, "account.create"),
        (OPERATOR, "va.create"),
        (OPERATOR, "holding.create"),
    ] == [(r.actor, r.action) for r in records]


async def test_an_entry_records_who_what_and_before_and_after(site: Site) -> None:
    await site.run(
        rename_virtual_account,
        as_=ALICE,
        account_name="ACME",
        name="Engineering",
        new_name="R&D",
        now=NOW + 60,
    )
    async with site.store.read() as tx:
        last = (await audit.entries(tx))[-1]
    assert (
        NOW + 60,
        ALICE,
        "va.rename",
        "virtual account ACME/R&D",
        '{"name":"Engineering"}',
        '{"name":"R&D"}',
    ) == (last.at, last.actor, last.action, last.subject, last.before, last.after)


async def test_an_accounts_entries_are_the_ones_about_it(site: Site) -> None:
    async with site.store.read() as tx:
        acme = await tx.fetch_one("SELECT id FROM accounts WHERE name = 'ACME'")
        assert acme is not None
        records = await audit.entries(tx, account_id=int(acme["id"]))
    assert ["account.create", "va.create"] == [r.action for r in records]


async def test_entries_since_a_time_leave_older_ones_out(site: Site) -> None:
    await site.run(
        rename_virtual_account,
        account_name="ACME",
        name="Engineering",
        new_name="R&D",
        now=NOW + 60,
    )
    async with site.store.read() as tx:
        records = await audit.entries(tx, since=NOW + 1)
    assert ["va.rename"] == [r.action for r in records]


async def test_an_untouched_log_verifies(site: Site) -> None:
    async with site.store.read() as tx:
        verdict = await audit.verify(tx)
    assert (True, 4, 4) == (verdict.intact, verdict.entries, verdict.head_seq)


entries = st.lists(
    st.builds(
        AuditEntry,
        actor=st.emails(),
        action=st.sampled_from(["va.create", "token.create", "compliance.change"]),
        subject=st.text(max_size=20),
        account_id=st.none() | st.integers(1, 9),
        before=st.none() | st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
        after=st.none() | st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2),
    ),
    min_size=1,
    max_size=8,
)

COLUMNS = (
    "at",
    "actor",
    "action",
    "account_id",
    "subject",
    "before_state",
    "after_state",
    "prev_hash",
    "hash",
)


async def _write(path: Path, batches: list[list[AuditEntry]]) -> None:
    store = await open_store(path, create=True)
    try:
        for i, batch in enumerate(batches):
            async with store.write() as tx:
                await audit.append(tx, batch, now=NOW + i)
    finally:
        await store.close()


async def _verify(path: Path) -> audit.Verdict:
    store = await open_store(path)
    try:
        async with store.read() as tx:
            return await audit.verify(tx)
    finally:
        await store.close()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=st.lists(entries, min_size=1, max_size=3))
def test_the_chain_verifies_after_any_sequence_of_appends(batches: list[list[AuditEntry]]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "c.db"
        asyncio.run(_write(path, batches))
        verdict = asyncio.run(_verify(path))
    assert (True, sum(map(len, batches))) == (verdict.intact, verdict.entries)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=entries, data=st.data())
def test_any_single_edit_is_detected_and_named(
    batch: list[AuditEntry], data: st.DataObject
) -> None:
    seq = data.draw(st.integers(1, len(batch)), label="seq")
    column = data.draw(st.sampled_from(COLUMNS), label="column")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "c.db"
        asyncio.run(_write(path, [batch]))
        with sqlite3.connect(path) as conn:
            conn.execute(
                f"UPDATE audit_log SET {column} = COALESCE({column} || 'x', 'x') WHERE seq = ?",  # noqa: S608 -- column from a fixed list
                (seq,),
            )
        verdict = asyncio.run(_verify(path))
    assert not verdict.intact
    assert any(f"entry {seq} " in problem for problem in verdict.problems), verdict.problems


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=entries, data=st.data())
def test_any_deleted_entry_is_detected_and_named(
    batch: list[AuditEntry], data: st.DataObject
) -> None:
    seq = data.draw(st.integers(1, len(batch)), label="seq")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "c.db"
        asyncio.run(_write(path, [batch]))
        with sqlite3.connect(path) as conn:
            conn.execute("DELETE FROM audit_log WHERE seq = ?", (seq,))
        verdict = asyncio.run(_verify(path))
    assert (f"entry {seq} is missing (deleted)",) == verdict.problems[:1]


async def test_deleting_the_newest_entries_is_caught_by_the_head(site: Site) -> None:
    async with site.store.write() as tx:
        await tx.execute("DELETE FROM audit_log WHERE seq >= 3")
        verdict = await audit.verify(tx)
    assert ("entries 3..4 are missing (deleted)",) == verdict.problems


async def test_a_head_whose_sequence_number_is_no_number_is_reported_as_tampering(
    site: Site,
) -> None:
    """Judged as stored, like the rows: verifying does not fail on the value it finds."""
    async with site.store.write() as tx:
        await tx.execute("UPDATE audit_head SET seq = 'abc'")
        verdict = await audit.verify(tx)
    assert ("the chain's head was edited (its sequence number reads 'abc')",) == verdict.problems


async def test_a_head_whose_hash_is_no_text_is_reported_as_tampering(site: Site) -> None:
    async with site.store.write() as tx:
        await tx.execute("UPDATE audit_head SET hash = x'07'")
        verdict = await audit.verify(tx)
    assert ("the chain's head was edited (its hash reads b'\\x07')",) == verdict.problems
