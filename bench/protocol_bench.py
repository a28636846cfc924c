"""How fast smartlic's protocol layer signs and checks a usage report, and how big one is.

    .venv/bin/python bench/protocol_bench.py [--seconds 0.5] [--json]

For Ed25519 and ES256 it measures, in one run on one core:

* build + sign: construct a 3-tag ``UsageReport`` and ``seal()`` it (payload CBOR, COSE_Sign1);
* parse + verify + decode: ``open_message()`` (strict CBOR, COSE profile, payload grammar) and
  ``Opened.verify()``;
* the bare sign and verify of the same Sig_structure bytes by the library smartlic calls
  (libsodium through PyNaCl for Ed25519, OpenSSL through ``cryptography`` for ES256), as the
  ceiling the protocol layer is measured against;

and the on-wire size of that report (goal: at most 200 bytes). Each rate is the best of
``--repeat`` timed windows, so background noise lowers none of them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from importlib.metadata import version
from typing import TYPE_CHECKING, Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from nacl.bindings import crypto_sign, crypto_sign_open, crypto_sign_seed_keypair
from smartlic.protocol import (
    KeyType,
    SigningKey,
    Udi,
    UsageReport,
    device_aad,
    encode_payload,
    open_message,
    seal,
)

if TYPE_CHECKING:
    from collections.abc import Callable

SIZE_GOAL: Final = 200
DEVICE_ID: Final = Udi(product_id="ISR4331/K9", serial="FDO21520TGH").device_id


def three_tag_report(seq: int) -> UsageReport:
    """A router using three license tags, answering its last notice's nonce."""
    return UsageReport(
        device_id=DEVICE_ID,
        seq=seq,
        issued_at=1_764_288_000 + seq,
        period=86_400,
        counts={"network-advantage": 1, "dna-advantage": 1, "throughput-1g": 1},
        nonce=bytes(range(16)),
    )


def rate(operation: Callable[[int], object], seconds: float, repeat: int) -> float:
    """Operations per second: the best of ``repeat`` windows of about ``seconds`` each."""
    batch = 1
    while True:  # grow the batch until one takes a tenth of the window
        start = time.perf_counter()
        for i in range(batch):
            operation(i)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds / 10:
            break
        batch *= 2
    best = 0.0
    for _ in range(repeat):
        done, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            for i in range(batch):
                operation(done + i)
            done += batch
        best = max(best, done / elapsed)
    return best


@dataclass(frozen=True, slots=True)
class Figures:
    algorithm: str
    wire_bytes: int
    payload_bytes: int
    build_sign_per_s: float
    bare_sign_per_s: float
    parse_verify_decode_per_s: float
    bare_verify_per_s: float


def measure(key_type: KeyType, seconds: float, repeat: int) -> Figures:
    key = SigningKey.from_seed(key_type, os.urandom(32 if key_type is KeyType.ED25519 else 48))
    public = key.public
    sealed = [seal(three_tag_report(seq), key) for seq in range(1, 65)]
    to_be_signed = open_message(sealed[0]).envelope.to_be_signed(device_aad(DEVICE_ID))
    ecdsa = ec.ECDSA(hashes.SHA256())

    if isinstance(key.key, ed25519.Ed25519PrivateKey):
        raw_public, secret = crypto_sign_seed_keypair(key.key.private_bytes_raw())
        signed = crypto_sign(to_be_signed, secret)

        def bare_sign(_: int) -> object:
            return crypto_sign(to_be_signed, secret)

        def bare_verify(_: int) -> object:
            return crypto_sign_open(signed, raw_public)

    else:
        ec_private = key.key
        ec_verifier = ec_private.public_key()
        der = ec_private.sign(to_be_signed, ecdsa)

        def bare_sign(_: int) -> object:
            return ec_private.sign(to_be_signed, ecdsa)

        def bare_verify(_: int) -> object:
            ec_verifier.verify(der, to_be_signed, ecdsa)
            return None

    def build_sign(i: int) -> object:
        return seal(three_tag_report(i + 1), key)

    def parse_verify_decode(i: int) -> object:
        opened = open_message(sealed[i % len(sealed)])
        opened.verify(public)
        return opened.message

    return Figures(
        algorithm="Ed25519 (-19)" if key_type is KeyType.ED25519 else "ES256 (-7)",
        wire_bytes=len(sealed[0]),
        payload_bytes=len(encode_payload(three_tag_report(1))),
        build_sign_per_s=rate(build_sign, seconds, repeat),
        bare_sign_per_s=rate(bare_sign, seconds, repeat),
        parse_verify_decode_per_s=rate(parse_verify_decode, seconds, repeat),
        bare_verify_per_s=rate(bare_verify, seconds, repeat),
    )


def environment() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor() or "unknown",
        "cryptography": version("cryptography"),
        "pynacl": version("pynacl"),
        "cbor2": version("cbor2"),
    }


def table(figures: list[Figures], env: dict[str, str]) -> str:
    names = [f.algorithm for f in figures]
    rows = [
        ("build + sign", [f.build_sign_per_s for f in figures]),
        ("  bare library sign", [f.bare_sign_per_s for f in figures]),
        ("parse + verify + decode", [f.parse_verify_decode_per_s for f in figures]),
        ("  bare library verify", [f.bare_verify_per_s for f in figures]),
    ]
    title = (
        "smartlic protocol benchmark: messages/s on one core "
        f"(Python {env['python']}, PyNaCl {env['pynacl']} for Ed25519,"
        f" cryptography {env['cryptography']} for ES256, cbor2 {env['cbor2']})"
    )
    lines = [
        title,
        "",
        f"{'':28}" + "".join(f"{name:>16}" for name in names),
    ]
    lines += [
        f"{label:28}" + "".join(f"{value:>16,.0f}" for value in values) for label, values in rows
    ]
    lines += [
        f"{'  protocol share of sign':28}"
        + "".join(f"{1 - f.build_sign_per_s / f.bare_sign_per_s:>16.0%}" for f in figures),
        f"{'  protocol share of verify':28}"
        + "".join(
            f"{1 - f.parse_verify_decode_per_s / f.bare_verify_per_s:>16.0%}" for f in figures
        ),
        "",
        "3-tag usage report on the wire: "
        + ", ".join(f"{f.wire_bytes} bytes ({f.algorithm})" for f in figures)
        + f"; payload {figures[0].payload_bytes} bytes; goal <= {SIZE_GOAL}",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=0.5, help="length of a timed window")
    parser.add_argument("--repeat", type=int, default=3, help="windows per figure (best wins)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    figures = [measure(kind, args.seconds, args.repeat) for kind in (KeyType.ED25519, KeyType.P256)]
    env = environment()
    if args.json:
        print(json.dumps({"environment": env, "figures": [asdict(f) for f in figures]}, indent=2))
    else:
        print(table(figures, env))
    return 0 if all(f.wire_bytes <= SIZE_GOAL for f in figures) else 1


if __name__ == "__main__":
    raise SystemExit(main())
