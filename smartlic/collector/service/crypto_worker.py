"""The signature work of the collector, as pure functions and as a worker process.

Verifying and signing are most of what a report costs the collector, and CPython runs one
thread of Python at a time: threads that release the GIL inside the C library must take it
back for every signature, and while the event loop is busy that hand-over costs more CPU than
the signature (measured here with OpenSSL: Ed25519 verify + sign took 173 µs of CPU on an idle
interpreter, 275-375 µs beside one busy Python thread). So the service signs and verifies in
processes of its own (``python -m smartlic.collector.service.crypto_worker``), each with its
own GIL, that read jobs on stdin and write results on stdout.

A frame is a 4-byte big-endian length and a CBOR body (our own process on a private pipe, so
plain lists of byte strings; nothing is pickled). Jobs:

* ``[0, [[key type, raw public key, signature, to-be-signed], ...]]`` → ``[0, [bool, ...]]``
* ``[1, signing key PEM, [to-be-signed, ...]]`` → ``[0, [signature, ...]]``

A job that fails as a whole is answered ``[1, message]``. The worker ends when its stdin does
(the service closed it, or died), and ignores SIGINT and SIGTERM meant for the service.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from typing import TYPE_CHECKING, Any, BinaryIO, Final

import cbor2

from smartlic.protocol.keys import KeyType, SigningKey, VerifyingKey

if TYPE_CHECKING:
    from collections.abc import Sequence

VERIFY: Final = 0
SIGN: Final = 1
OK: Final = 0
FAILED: Final = 1
HEADER_BYTES: Final = 4
MAX_FRAME: Final = 1 << 30
_KEY_CACHE: Final = 200_000


class Signer:
    """Verifies and signs batches, keeping the key objects it has built (pure: no I/O)."""

    def __init__(self) -> None:
        self._public: dict[tuple[str, bytes], VerifyingKey] = {}
        self._private: dict[bytes, SigningKey] = {}

    def verify(self, items: Sequence[Sequence[Any]]) -> list[bool]:
        """For each ``(key type, raw key, signature, to_be_signed)``: does the signature hold."""
        return [self._verify_one(*item) for item in items]

    def _verify_one(self, key_type: str, raw: bytes, signature: bytes, data: bytes) -> bool:
        key = self._public.get((key_type, raw))
        try:
            if key is None:
                if len(self._public) >= _KEY_CACHE:
                    self._public.clear()
                key = self._public[key_type, raw] = VerifyingKey.from_raw(KeyType(key_type), raw)
            return key.verify(signature, data)
        except Exception:  # noqa: BLE001 -- whatever a bad key or signature raises, it does not verify
            return False

    def sign(self, key_pem: bytes, items: Sequence[bytes]) -> list[bytes]:
        key = self._private.get(key_pem)
        if key is None:
            self._private.clear()
            key = self._private[key_pem] = SigningKey.from_pem(key_pem)
        return [key.sign(data) for data in items]

    def run(self, job: Any) -> list[Any]:  # noqa: ANN401 -- a decoded frame, checked here
        """Answer one decoded job frame (raises on a frame that is not a job)."""
        if job[0] == VERIFY:
            return [OK, self.verify(job[1])]
        if job[0] == SIGN:
            return [OK, self.sign(job[1], job[2])]
        raise ValueError(f"unknown job kind {job[0]!r}")


def frame(body: Any) -> bytes:  # noqa: ANN401 -- lists of bytes, ints and bools
    data = cbor2.dumps(body)
    return len(data).to_bytes(HEADER_BYTES, "big") + data


def _read_exactly(stream: BinaryIO, size: int) -> bytes | None:
    data = stream.read(size)
    return data if len(data) == size else None


def serve(reader: BinaryIO, writer: BinaryIO) -> None:
    """Answer frames from ``reader`` on ``writer`` until ``reader`` ends."""
    signer = Signer()
    while (header := _read_exactly(reader, HEADER_BYTES)) is not None:
        size = int.from_bytes(header, "big")
        body = _read_exactly(reader, size) if size <= MAX_FRAME else None
        if body is None:
            return
        try:
            answer = signer.run(cbor2.loads(body))
        except Exception as exc:  # noqa: BLE001 -- told to the service, which logs it
            answer = [FAILED, f"{type(exc).__name__}: {exc}"]
        writer.write(frame(answer))
        writer.flush()


def main() -> None:
    # The service decides when its workers stop, by closing their stdin: Ctrl-C in a terminal
    # or a SIGTERM to the whole process group must not kill a worker under a batch in flight.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with contextlib.suppress(BrokenPipeError):
        serve(sys.stdin.buffer, sys.stdout.buffer)


if __name__ == "__main__":
    main()
