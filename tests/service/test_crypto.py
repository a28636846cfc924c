"""The service's signature work: worker processes and the in-process path give the same answers."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st
from smartlic.collector.service import crypto, crypto_worker
from smartlic.collector.service.crypto import CryptoPool, CryptoUnavailable
from smartlic.collector.service.crypto_worker import Signer, frame, serve
from smartlic.protocol import (
    Authorization,
    KeyType,
    SigningKey,
    TagCompliance,
    Udi,
    UsageReport,
    open_message,
    seal,
)
from structlog.testing import capture_logs

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

NOW = 1_760_000_000
COLLECTOR = SigningKey.from_seed(KeyType.ED25519, bytes(range(32)))
DEVICE = SigningKey.from_seed(KeyType.ED25519, bytes(range(1, 33)))
OTHER = SigningKey.from_seed(KeyType.ED25519, bytes(range(2, 34)))
P256_DEVICE = SigningKey.from_seed(KeyType.P256, bytes(range(48)))
DEVICE_ID = Udi(product_id="C9300-24T", serial="FOC0001").device_id


def _report(seq: int = 1, key: SigningKey = DEVICE) -> bytes:
    return seal(
        UsageReport(device_id=DEVICE_ID, seq=seq, issued_at=NOW, period=86_400, counts={"dna": 2}),
        key,
    )


def _notice(seq: int) -> Authorization:
    return Authorization(
        device_id=DEVICE_ID,
        notice_seq=seq,
        issued_at=NOW,
        in_reply_to=seq,
        virtual_account="DEFAULT",
        valid_until=NOW + 90 * 86_400,
        next_report_at=NOW + 86_400,
        nonce=secrets.token_bytes(8),
        tags={"dna": TagCompliance(in_use=2, entitled=10)},
    )


@pytest.fixture(params=[0, 2], ids=["in-process", "two-workers"])
async def pool(request: pytest.FixtureRequest) -> AsyncIterator[CryptoPool]:
    made = CryptoPool(request.param)
    yield made
    await made.close()


async def test_a_good_signature_verifies_and_another_signer_does_not(pool: CryptoPool) -> None:
    report = open_message(_report())
    verdicts = await pool.verify(
        [
            (report, DEVICE.public),
            (open_message(_report(key=OTHER)), DEVICE.public),
            (report, P256_DEVICE.public),
        ]
    )
    assert [
        None,
        "kid does not name the expected signer",
        "kid does not name the expected signer",
    ] == verdicts


async def test_a_forged_signature_with_the_right_kid_does_not_verify(pool: CryptoPool) -> None:
    data = bytearray(_report())
    data[-1] ^= 1
    assert [None, "signature does not verify"] == await pool.verify(
        [(open_message(_report()), DEVICE.public), (open_message(bytes(data)), DEVICE.public)]
    )


async def test_p256_signatures_verify_too(pool: CryptoPool) -> None:
    report = open_message(_report(key=P256_DEVICE))
    assert [None] == await pool.verify([(report, P256_DEVICE.public)])


async def test_sealed_notices_verify_with_the_collector_key_in_order(pool: CryptoPool) -> None:
    notices = [_notice(seq) for seq in range(1, 41)]
    sealed = await pool.seal(COLLECTOR, notices)
    opened = [open_message(data) for data in sealed]
    for message in opened:
        message.verify(COLLECTOR.public)
    assert notices == [message.message for message in opened]


async def test_start_has_every_worker_running_before_the_first_job() -> None:
    pool = CryptoPool(2)
    try:
        await pool.start()
        pids = pool.pids
        assert 2 == len(set(pids))
        await pool.seal(COLLECTOR, [_notice(n) for n in range(1, 9)])
        assert pids == pool.pids
    finally:
        await pool.close()


async def test_start_fails_when_a_worker_cannot_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(crypto, "_WORKER_MODULE", "smartlic.collector.service.no_such_worker")
    pool = CryptoPool(1)
    try:
        with capture_logs(), pytest.raises(CryptoUnavailable, match="failed twice"):
            await pool.start()
    finally:
        await pool.close()


async def test_start_without_workers_starts_nothing() -> None:
    pool = CryptoPool(0)
    await pool.start()
    assert [] == pool.pids


async def test_a_killed_worker_is_started_again_and_the_batch_still_answered() -> None:
    pool = CryptoPool(1)
    try:
        await pool.seal(COLLECTOR, [_notice(1)])
        (pid,) = pool.pids
        os.kill(pid, signal.SIGKILL)
        await asyncio.sleep(0.2)
        with capture_logs() as logs:
            sealed = await pool.seal(COLLECTOR, [_notice(2)])
        open_message(sealed[0]).verify(COLLECTOR.public)
        assert ["collector.crypto_worker_lost"] == [
            entry["event"] for entry in logs if entry["log_level"] == "warning"
        ]
    finally:
        await pool.close()


def test_the_worker_answers_frames_until_its_input_ends() -> None:
    data = b"to be signed"
    signature = DEVICE.sign(data)
    requests = frame(
        [crypto_worker.VERIFY, [["Ed25519", DEVICE.public.raw, signature, data]]]
    ) + frame([crypto_worker.SIGN, COLLECTOR.to_pem(), [data]])
    out = io.BytesIO()
    serve(io.BytesIO(requests), out)
    first_size = int.from_bytes(out.getvalue()[:4], "big")
    first = cbor2.loads(out.getvalue()[4 : 4 + first_size])
    second = cbor2.loads(out.getvalue()[8 + first_size :])
    assert [crypto_worker.OK, [True]] == first
    assert [crypto_worker.OK, [COLLECTOR.sign(data)]] == second


def test_a_job_the_worker_cannot_read_is_answered_as_failed() -> None:
    out = io.BytesIO()
    serve(io.BytesIO(frame([7, []])), out)
    assert [crypto_worker.FAILED, "ValueError: unknown job kind 7"] == cbor2.loads(
        out.getvalue()[4:]
    )


@given(
    kind=st.sampled_from(["Ed25519", "P-256", "RSA"]),
    key=st.binary(max_size=70),
    signature=st.binary(max_size=70),
    data=st.binary(),
)
def test_any_bytes_as_key_or_signature_only_fail_to_verify(
    kind: str, key: bytes, signature: bytes, data: bytes
) -> None:
    assert [False] == Signer().verify([(kind, key, signature, data)])


_HOLDER = """
import asyncio, sys
from smartlic.collector.service.crypto import CryptoPool
from smartlic.protocol import KeyType, SigningKey

async def main():
    pool = CryptoPool(1)
    key = SigningKey.from_seed(KeyType.ED25519, bytes(32))
    await pool._map(1, [b"warm up"], key.to_pem())
    print("workers", *pool.pids, flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


def test_workers_end_when_the_service_is_killed() -> None:
    """A collector killed with SIGKILL leaves no worker behind: each ends with its pipe."""
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        line = next(line for line in holder.stdout if line.startswith("workers "))
        (worker,) = map(int, line.split()[1:])
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        deadline = time.monotonic() + 10
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(worker)
    finally:
        holder.kill()
        holder.communicate()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def test_a_hung_worker_is_replaced_after_the_job_timeout() -> None:
    pool = CryptoPool(1, job_timeout=0.5)
    try:
        await pool.seal(COLLECTOR, [_notice(1)])
        (pid,) = pool.pids
        os.kill(pid, signal.SIGSTOP)
        with capture_logs() as logs:
            sealed = await pool.seal(COLLECTOR, [_notice(2)])
        open_message(sealed[0]).verify(COLLECTOR.public)
        assert [("collector.crypto_worker_lost", "TimeoutError")] == [
            (entry["event"], entry["error"]) for entry in logs if entry["log_level"] == "warning"
        ]
        assert [pid] != pool.pids
    finally:
        await pool.close()


async def test_a_job_cancelled_half_way_leaves_no_answer_for_the_next_one() -> None:
    """The worker of a cancelled job is replaced: its late answer must not be read as another's."""
    pool = CryptoPool(1)
    try:
        await pool.seal(COLLECTOR, [_notice(1)])
        abandoned = asyncio.create_task(pool.seal(COLLECTOR, [_notice(n) for n in range(1, 400)]))
        await asyncio.sleep(0.005)
        abandoned.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await abandoned
        wanted = [_notice(n) for n in (7, 8)]

        sealed = await pool.seal(COLLECTOR, wanted)

        opened = [open_message(data) for data in sealed]
        for message in opened:
            message.verify(COLLECTOR.public)
        assert wanted == [message.message for message in opened]
    finally:
        await pool.close()


async def test_an_answer_left_unread_by_a_cancelled_job_is_not_taken_by_the_next() -> None:
    """The worker had answered when its job was cancelled: the next job gets its own answer."""
    pool = CryptoPool(1)
    try:
        await pool.seal(COLLECTOR, [_notice(1)])
        abandoned = asyncio.create_task(pool.seal(COLLECTOR, [_notice(2)]))
        for _ in range(5):
            await asyncio.sleep(0)  # the request reaches the worker
        time.sleep(0.2)  # noqa: ASYNC251 -- the loop must not read the worker's answer yet
        abandoned.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await abandoned

        wanted = _notice(3)

        (sealed,) = await pool.seal(COLLECTOR, [wanted])

        opened = open_message(sealed)
        opened.verify(COLLECTOR.public)
        assert wanted == opened.message
    finally:
        await pool.close()
