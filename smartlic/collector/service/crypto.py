"""Signature work for the service, in worker processes (see ``crypto_worker``).

The service keeps everything that reads or builds a message (headers, ``kid``, the
``Sig_structure``, the COSE envelope of each answer); a worker only runs the signature library
(libsodium for Ed25519, OpenSSL for P-256) over bytes. A batch is split into one chunk per
worker, so both cores of a small machine verify while the event loop goes on. With
``workers=0`` everything runs in the service's own process, on the event loop: the least CPU
per message, one core.

A worker that dies is started again and its chunk sent again (the work is pure, so doing it
twice changes nothing); if that fails too, :class:`CryptoUnavailable` tells the caller, who
retries the batch later without acknowledging anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from typing import TYPE_CHECKING, Any, Final

import cbor2
import structlog

from smartlic.collector.service.crypto_worker import (
    FAILED,
    HEADER_BYTES,
    SIGN,
    VERIFY,
    Signer,
    frame,
)
from smartlic.protocol import RemoteProtocolError
from smartlic.protocol.cose import SIGNATURE_DOES_NOT_VERIFY
from smartlic.protocol.envelope import prepare_seal

if TYPE_CHECKING:
    from collections.abc import Sequence

    from smartlic.protocol import CollectorMessage, Opened, SigningKey, VerifyingKey

log = structlog.get_logger("smartlic.collector")

_WORKER_MODULE: Final = "smartlic.collector.service.crypto_worker"
_SMALL: Final = 8
"""Fewer items than this go to one worker: splitting would cost more than it saves."""
_STOP_TIMEOUT: Final = 5.0
JOB_TIMEOUT: Final = 30.0
"""Seconds a worker may take over one chunk (≈ 40 ms for 250 reports) before it is replaced:
a worker that hangs must not stall the service."""


class CryptoUnavailable(Exception):  # noqa: N818 -- names the condition, like StoreError's kin
    """A worker process failed twice in a row; the batch should be tried again later."""


class _Worker:
    """One worker process and the pipe to it; one job at a time."""

    def __init__(self, index: int, job_timeout: float) -> None:
        self.index = index
        self._job_timeout = job_timeout
        self._process: asyncio.subprocess.Process | None = None
        self._killed: asyncio.subprocess.Process | None = None
        """A worker killed under a cancelled job, reaped before the next job starts another."""
        self._lock = asyncio.Lock()

    @property
    def pid(self) -> int | None:
        process = self._process
        return process.pid if process is not None and process.returncode is None else None

    async def _start(self) -> asyncio.subprocess.Process:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            _WORKER_MODULE,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        log.debug("collector.crypto_worker_started", worker=self.index, pid=process.pid)
        return process

    async def call(self, request: bytes) -> Any:  # noqa: ANN401 -- the worker's decoded answer
        async with self._lock:
            await self._reap()
            for attempt in (1, 2):
                process = self._process
                if process is not None and process.returncode is not None:
                    log.warning(
                        "collector.crypto_worker_lost",
                        worker=self.index,
                        exit_code=process.returncode,
                    )
                    process = None
                if process is None:
                    process = self._process = await self._start()
                try:
                    async with asyncio.timeout(self._job_timeout):
                        return await self._exchange(process, request)
                except (ConnectionError, asyncio.IncompleteReadError, OSError, TimeoutError) as exc:
                    log.warning(
                        "collector.crypto_worker_lost",
                        worker=self.index,
                        attempt=attempt,
                        error=str(exc) or type(exc).__name__,
                    )
                    if isinstance(exc, TimeoutError):
                        _kill(process)  # hung: it would not notice its stdin closing
                    await self._stop(process)
                    self._process = None
                except BaseException:
                    # Cancelled, or the job refused: the pipe may hold half a request or an
                    # answer nobody read, which the next job would take for its own. The
                    # worker goes, and the next call starts another: until the killed one
                    # is reaped its returncode stays None, so it cannot be told from a
                    # live one, and its pipe may still hold that answer.
                    _kill(process)
                    self._process, self._killed = None, process
                    raise
            raise CryptoUnavailable(f"crypto worker {self.index} failed twice in a row")

    @staticmethod
    async def _exchange(process: asyncio.subprocess.Process, request: bytes) -> Any:  # noqa: ANN401 -- see call
        stdin, stdout = process.stdin, process.stdout
        if stdin is None or stdout is None:
            raise ConnectionError("worker has no pipes")
        stdin.write(request)
        await stdin.drain()
        header = await stdout.readexactly(HEADER_BYTES)
        answer = cbor2.loads(await stdout.readexactly(int.from_bytes(header, "big")))
        if answer[0] == FAILED:
            raise CryptoUnavailable(f"crypto worker refused a job: {answer[1]}")
        return answer[1]

    @staticmethod
    async def _stop(process: asyncio.subprocess.Process) -> None:
        if process.stdin is not None:
            process.stdin.close()
            with contextlib.suppress(ConnectionError, OSError):
                await process.stdin.wait_closed()
        try:
            async with asyncio.timeout(_STOP_TIMEOUT):
                await process.wait()
        except TimeoutError:
            _kill(process)
            await process.wait()

    async def _reap(self) -> None:
        killed, self._killed = self._killed, None
        if killed is not None:
            # SIGKILL ends a process unless it is stuck in the kernel; then it is left behind
            # rather than holding up the service.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_STOP_TIMEOUT):
                    await killed.wait()

    async def close(self) -> None:
        async with self._lock:
            await self._reap()
            if self._process is not None:
                await self._stop(self._process)
                self._process = None


def _kill(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        process.kill()


class CryptoPool:
    def __init__(self, workers: int, *, job_timeout: float = JOB_TIMEOUT) -> None:
        self._signer = Signer()
        """For ``workers=0``: verifies here with the same code the workers run."""
        self._pool = [_Worker(index, job_timeout) for index in range(max(0, workers))]
        self._next = 0
        self._pem: tuple[SigningKey, bytes] | None = None
        """The signing key as the workers load it, made once per key."""

    async def _map(self, kind: int, items: Sequence[Any], key_pem: bytes = b"") -> list[Any]:
        """Split ``items`` over the workers and gather their answers in order."""
        if not items:
            return []
        if len(items) < _SMALL or len(self._pool) == 1:
            chunks = [items]
        else:
            size = -(-len(items) // len(self._pool))
            chunks = [items[i : i + size] for i in range(0, len(items), size)]
        workers = [self._pool[(self._next + i) % len(self._pool)] for i in range(len(chunks))]
        self._next = (self._next + len(chunks)) % len(self._pool)
        requests = [
            frame([VERIFY, list(chunk)] if kind == VERIFY else [SIGN, key_pem, list(chunk)])
            for chunk in chunks
        ]
        parts = await asyncio.gather(
            *(worker.call(request) for worker, request in zip(workers, requests, strict=True))
        )
        results = [result for part in parts for result in part]
        if len(results) != len(items):
            raise CryptoUnavailable("a crypto worker answered the wrong number of items")
        return results

    async def verify(self, work: Sequence[tuple[Opened, VerifyingKey]]) -> list[str | None]:
        """For each (message, key): ``None`` when the signature holds, else the reason."""
        problems: list[str | None] = [None] * len(work)
        jobs: list[tuple[str, bytes, bytes, bytes]] = []
        checked: list[int] = []
        for index, (opened, key) in enumerate(work):
            try:
                data = opened.signed_bytes(key)
            except RemoteProtocolError as exc:
                problems[index] = exc.message
                continue
            jobs.append((key.key_type.value, key.raw, opened.envelope.signature, data))
            checked.append(index)
        verdicts = await self._map(VERIFY, jobs) if self._pool else self._signer.verify(jobs)
        for index, verdict in zip(checked, verdicts, strict=True):
            if verdict is not True:
                problems[index] = SIGNATURE_DOES_NOT_VERIFY
        return problems

    async def seal(self, key: SigningKey, messages: Sequence[CollectorMessage]) -> list[bytes]:
        """Each message encoded and signed by ``key`` (bound to its device), in order."""
        pending = [prepare_seal(message, key.public) for message in messages]
        if not self._pool:
            return [p.finish(key.sign(p.to_be_signed)) for p in pending]
        if self._pem is None or self._pem[0] is not key:
            self._pem = (key, key.to_pem())
        signatures = await self._map(SIGN, [p.to_be_signed for p in pending], self._pem[1])
        return [p.finish(signature) for p, signature in zip(pending, signatures, strict=True)]

    async def start(self) -> None:
        """Start every worker now and wait until each answers (an empty job), rather than
        have the first batch wait for them; :class:`CryptoUnavailable` if one cannot start."""
        ping = frame([VERIFY, []])
        await asyncio.gather(*(worker.call(ping) for worker in self._pool))

    @property
    def pids(self) -> list[int]:
        """The running worker processes (for monitoring; started by :meth:`start` or the
        first job)."""
        return [worker.pid for worker in self._pool if worker.pid is not None]

    async def close(self) -> None:
        await asyncio.gather(*(worker.close() for worker in self._pool))
