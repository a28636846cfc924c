"""The least CPU a CPython collector can spend per report with the collector's own libraries.

    .venv/bin/python bench/floor_bench.py [--devices 2000] [--reports 10] [--rounds 5] [--tcp]

Not the collector: a straight-line loop that does only what any collector must do with each
report, written for speed and nothing else, so that its cost bounds from below what the real
service can reach. Per report, over a buffer of MQTT 5 QoS 1 PUBLISH packets holding real
smartlic reports: split the packet (fixed header, topic, packet id, properties), take the
device id from the topic, decode the COSE_Sign1 envelope, its protected header and the payload
with cbor2, build the ``Sig_structure`` (RFC 9052 §4.4) and verify it with the device's key,
check the sequence number against the last accepted one, count the usage into its pool, encode
a signed authorization as a COSE_Sign1, frame it as a PUBLISH and the report's PUBACK, and
store the report, its answer and the device's new sequence number: one ``executemany`` per
batch of 500 in one transaction, SQLite in WAL mode with ``synchronous = FULL``, as the
collector does it. Each step the fastest way measured: cbor2's encoder and decoder reused
rather than set up per call, the ``Sig_structure`` and the envelope written as bytes by the
protocol's own writers (``cose.sig_structure``, ``cose.prepare_sign1``). Each
round checks that its last answer opens and verifies as an authorization with smartlic's own
strict decoder, so the loop cannot be cheaper by answering less.

With ``--tcp`` the packets come from, and the answers and PUBACKs go to, a loopback TCP
connection to a peer in its own process (whose CPU is not counted), read 256 KiB at a time,
one transaction and one write per read; without it, from memory. What it leaves out, each of
which the real service cannot: the broker, the event loop, any check of the message's fields
beyond the few the loop reads, dead letters, duplicates and refusals, logging, every worker
process and pipe. So the figure is a floor, not an estimate: a real collector with the same
libraries spends more.

It prints the floor's CPU per report beside the bare verify + sign cost measured in the same
run (``collector_bench.bare_crypto_cost``, the baseline of the collector's own CPU goal) and
their ratio, and the floor minus the bare cost: the Python, CBOR and SQLite a report costs at
the least.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import multiprocessing
import secrets
import socket
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import cbor2
from smartlic.mqtt import packets
from smartlic.protocol import (
    Authorization,
    KeyType,
    SigningKey,
    Udi,
    UsageReport,
    VerifyingKey,
    open_message,
    seal,
)
from smartlic.protocol.cose import COSE_SIGN1_TAG, prepare_sign1, sig_structure
from smartlic.protocol.envelope import device_aad

from collector_bench import TAG, TOPICS, bare_crypto_cost

if TYPE_CHECKING:
    from collections.abc import Callable

BATCH: Final = 500
PERIOD: Final = 86_400
ED25519: Final = -19
"""The alg of a device's Ed25519 signature (RFC 9864)."""
READ_SIZE: Final = 262_144
"""Bytes per socket read: ≈ 1,400 reports, so a read's worth is one batch."""


AUTHORIZATION: Final = 4
CONTINUATION: Final = 0x80
"""A variable byte integer goes on while this bit is set (MQTT 5 §1.5.5)."""


@dataclass(slots=True)
class Device:
    key: VerifyingKey
    last_seq: int
    va: str
    aad: bytes
    """The external AAD binding a signature to the device."""
    reply_topic: str
    counts: dict[str, int]
    notice_seq: int = 0


@dataclass(slots=True)
class Pool:
    in_use: int
    entitled: int


def build(devices: int, reports: int) -> tuple[dict[str, Device], list[bytes]]:
    """Registered devices by id and the PUBLISH packets of their reports, in batches."""
    now = int(time.time())
    fleet = []
    registry: dict[str, Device] = {}
    for n in range(devices):
        udi = Udi(product_id="C9300-24T", serial=f"FLOOR{n:06d}")
        key = SigningKey.from_seed(KeyType.ED25519, secrets.token_bytes(32))
        fleet.append((udi.device_id, key))
        registry[udi.device_id] = Device(
            key=key.public,
            last_seq=0,
            va="Default",
            aad=device_aad(udi.device_id),
            reply_topic=TOPICS.downlink(udi.device_id),
            counts={},
        )
    frames = [
        packets.publish(
            TOPICS.uplink(device_id),
            seal(
                UsageReport(
                    device_id=device_id,
                    seq=seq,
                    issued_at=now,
                    period=PERIOD,
                    counts={TAG: 1 + seq % 5},
                ),
                key,
            ),
            qos=1,
            packet_id=1 + (len(fleet) * (seq - 1) + n) % 65_535,
            v5=True,
        )
        for seq in range(1, reports + 1)
        for n, (device_id, key) in enumerate(fleet)
    ]
    batches = [b"".join(frames[i : i + BATCH]) for i in range(0, len(frames), BATCH)]
    return registry, batches


def open_db(path: Path, registry: dict[str, Device]) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = FULL")
    db.execute("CREATE TABLE device (id TEXT PRIMARY KEY, last_seq INTEGER NOT NULL)")
    db.execute(
        "CREATE TABLE report (device TEXT NOT NULL, seq INTEGER NOT NULL, issued_at INTEGER,"
        " counts BLOB NOT NULL, answer BLOB NOT NULL, PRIMARY KEY (device, seq))"
    )
    db.executemany("INSERT INTO device VALUES (?, 0)", [(d,) for d in registry])
    return db


def drain(  # noqa: C901, PLR0915 -- one straight loop on purpose: every call saved counts
    read: Callable[[], bytes],
    write: Callable[[bytes], object],
    registry: dict[str, Device],
    pools: dict[tuple[str, str], Pool],
    collector: SigningKey,
    db: sqlite3.Connection,
) -> tuple[int, float]:
    """Handle every report ``read`` gives until it gives ``b""``, one transaction and one
    ``write`` of the answers and acknowledgements per read: how many were answered, and the
    CPU seconds the store's part took."""
    tag18 = cbor2.CBORTag
    incoming = io.BytesIO()
    decoder = cbor2.CBORDecoder(incoming)
    outgoing = io.BytesIO()
    encoder = cbor2.CBOREncoder(outgoing)

    def loads(data: bytes) -> Any:  # noqa: ANN401 -- whatever the bytes hold
        incoming.seek(0)
        incoming.truncate()
        incoming.write(data)
        incoming.seek(0)
        return decoder.decode()

    def dumps(value: object) -> bytes:
        outgoing.seek(0)
        outgoing.truncate()
        encoder.encode(value)
        return outgoing.getvalue()

    prefix, suffix = len(f"{TOPICS.prefix}/d/"), len("/up")
    sign, public = collector.sign, collector.public
    answered, store_seconds, rest = 0, 0.0, b""
    while chunk := read():
        buf = rest + chunk if rest else chunk
        out: list[bytes] = []
        acks: list[bytes] = []
        reports: list[tuple[str, int, int, bytes, bytes]] = []
        seqs: list[tuple[int, str]] = []
        pos, end = 0, len(buf)
        while pos < end:
            length, shift, i = 0, 0, pos + 1
            while i < end:
                byte = buf[i]
                length |= (byte & 0x7F) << shift
                i += 1
                if byte < CONTINUATION:
                    break
                shift += 7
            else:
                break
            if i + length > end:
                break
            body = memoryview(buf)[i : i + length]
            pos = i + length
            tlen = (body[0] << 8) | body[1]
            topic = bytes(body[2 : 2 + tlen]).decode()
            packet_id = (body[2 + tlen] << 8) | body[3 + tlen]
            props = body[4 + tlen]
            payload = bytes(body[5 + tlen + props :])
            device_id = topic[prefix : len(topic) - suffix]
            envelope = loads(payload)
            if not isinstance(envelope, tag18) or envelope.tag != COSE_SIGN1_TAG:
                continue
            protected, _unprotected, inner, signature = envelope.value
            if loads(protected).get(1) != ED25519:
                continue
            message = loads(inner)
            if message[2] != device_id:
                continue
            device = registry[device_id]
            to_verify = sig_structure(protected, inner, device.aad)
            if not device.key.verify(signature, to_verify):
                continue
            seq, issued_at, counts = message[8], message[7], message[10]
            if seq <= device.last_seq:
                continue
            device.last_seq = seq
            standing = {}
            previous = device.counts
            for tag, count in counts.items():
                pool = pools[device.va, tag]
                pool.in_use += count - previous.get(tag, 0)
                shortfall = max(0, pool.in_use - pool.entitled)
                standing[tag] = [int(shortfall > 0), pool.in_use, pool.entitled, shortfall]
            device.counts = counts
            device.notice_seq += 1
            notice = dumps(
                {
                    0: AUTHORIZATION,
                    1: 1,
                    2: device_id,
                    7: issued_at,
                    11: secrets.token_bytes(16),
                    12: device.notice_seq,
                    13: seq,
                    14: issued_at + 2 * PERIOD,
                    15: issued_at + PERIOD,
                    16: standing,
                    20: device.va,
                }
            )
            sealing = prepare_sign1(notice, public, external_aad=device.aad)
            answer = sealing.finish(sign(sealing.to_be_signed))
            out.append(packets.publish(device.reply_topic, answer, qos=1, packet_id=1, v5=True))
            acks.append(packets.puback(packet_id))
            reports.append((device_id, seq, issued_at, inner, answer))
            seqs.append((seq, device_id))
        committing = time.process_time()
        db.execute("BEGIN IMMEDIATE")
        db.executemany("INSERT INTO report VALUES (?, ?, ?, ?, ?)", reports)
        db.executemany("UPDATE device SET last_seq = ? WHERE id = ?", seqs)
        db.execute("COMMIT")
        store_seconds += time.process_time() - committing
        write(b"".join(out) + b"".join(acks))
        rest = buf[pos:]
        answered += len(reports)
    return answered, store_seconds


def check_answer(answer: bytes, collector: VerifyingKey) -> None:
    """Stop unless ``answer`` is an authorization any device would accept: the floor must
    do the real work, not a cheaper imitation of it."""
    opened = open_message(answer)
    opened.verify(collector)
    if not isinstance(opened.message, Authorization):
        raise SystemExit(f"floor_bench: answered with {opened.message!r}")


def peer(address: tuple[str, int], batches: list[bytes]) -> None:
    """The other end of the TCP connection, in its own process so its CPU is not counted:
    sends every PUBLISH, then half-closes, and reads what comes back until the floor closes."""
    with socket.create_connection(address) as sock:

        def send() -> None:
            for chunk in batches:
                sock.sendall(chunk)
            sock.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=send, name="floor-peer-send")
        sender.start()
        while sock.recv(READ_SIZE):
            pass
        sender.join()


def one_round(devices: int, reports: int, *, tcp: bool) -> tuple[float, float]:
    """CPU µs per report of one drain over a fresh database, in all and in SQLite; over a
    loopback TCP connection to a peer process when ``tcp``, else from memory."""
    registry, batches = build(devices, reports)
    collector = SigningKey.from_seed(KeyType.ED25519, secrets.token_bytes(32))
    pools = {("Default", TAG): Pool(in_use=0, entitled=devices * 10)}
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="smartlic-floor-"))
        db = open_db(Path(tmp) / "floor.db", registry)
        stack.callback(db.close)
        read: Callable[[], bytes]
        write: Callable[[bytes], object]
        if tcp:
            listener = stack.enter_context(socket.create_server(("127.0.0.1", 0)))
            process = multiprocessing.get_context("fork").Process(
                target=peer, args=(listener.getsockname(), batches), name="floor-peer"
            )
            process.start()
            stack.callback(process.join, 30)
            sock, _ = listener.accept()
            stack.enter_context(sock)
            read, write = functools.partial(sock.recv, READ_SIZE), sock.sendall
        else:
            read, write = iter([*batches, b""]).__next__, len
        start = time.process_time()
        answered, store = drain(read, write, registry, pools, collector, db)
        spent = time.process_time() - start
        (last_answer,) = db.execute("SELECT answer FROM report ORDER BY rowid DESC").fetchone()
    expected = devices * reports
    if answered != expected:
        raise SystemExit(f"floor_bench: answered {answered} of {expected} reports")
    check_answer(last_answer, collector.public)
    return spent / answered * 1e6, store / answered * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--devices", type=int, default=2000)
    parser.add_argument("--reports", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--tcp",
        action="store_true",
        help="read the reports from and write the answers to a loopback TCP connection",
    )
    args = parser.parse_args()
    floors, bares = [], []
    for n in range(1, args.rounds + 1):
        bare = bare_crypto_cost()["verify_sign_us"]
        floor, store = one_round(args.devices, args.reports, tcp=args.tcp)
        bare = (bare + bare_crypto_cost()["verify_sign_us"]) / 2
        floors.append(floor)
        bares.append(bare)
        print(
            f"round {n}: floor {floor:.0f} µs per report, bare verify + sign {bare:.0f} µs,"
            f" ratio {floor / bare:.2f}x; beyond the crypto {floor - bare:.0f} µs,"
            f" of which SQLite {store:.0f} µs"
        )
    ratios = [f / b for f, b in zip(floors, bares, strict=True)]
    print(
        f"median: floor {statistics.median(floors):.0f} µs, bare {statistics.median(bares):.0f} µs,"
        f" ratio {statistics.median(ratios):.2f}x (min {min(ratios):.2f}x, max {max(ratios):.2f}x)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
