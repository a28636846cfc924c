"""``smartlic-inspect``: decode a smartlic message and, given a key, check its signature.

    smartlic-inspect FILE|- [--hex] [--key PUBKEY_FILE]

stdout gets one JSON document: the envelope (buckets, algorithm, kid), the message type and
the payload, and the signature verdict. stderr gets the lines meant for people:
``signature: valid`` or ``signature: INVALID (<reason>)`` when a key was given, and a one-line
reason whenever the exit code is not 0. Exit codes:

* 0: a smartlic message, and its signature is valid (if a key was given);
* 1: the signature is invalid (the bytes were a COSE_Sign1, so a verdict was possible);
* 2: the input is malformed, not a COSE_Sign1, or its payload is not a smartlic message, or a
  file or key could not be read.

This module is the console entry point, not part of the library: it is the one place in
``smartlic.protocol`` that reads files and writes to the terminal, and nothing imports it
(tests/test_architecture.py checks both). All I/O is in :func:`main`; everything it shows is
computed by the pure :func:`inspect_message`.
"""

from __future__ import annotations

import argparse
import binascii
import dataclasses
import json
import sys
from enum import IntEnum
from typing import TYPE_CHECKING, Any, Final, TypeAlias

import cbor2

from smartlic.protocol import cbor
from smartlic.protocol.codec import decode_payload
from smartlic.protocol.cose import parse_sign1
from smartlic.protocol.envelope import Opened
from smartlic.protocol.errors import ErrorCode, LocalProtocolError, ProtocolError
from smartlic.protocol.identity import Udi
from smartlic.protocol.keys import KeyType, SigningKey, VerifyingKey, format_fingerprint
from smartlic.protocol.messages import Message, RegistrationRequest, TagCompliance
from smartlic.protocol.tokens import TOKEN_PREFIX

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from smartlic.protocol.cose import Sign1

EXIT_OK: Final = 0
EXIT_BAD_SIGNATURE: Final = 1
EXIT_MALFORMED: Final = 2
PROG: Final = "smartlic-inspect"

_HEADER_NAMES: Final = {1: "alg", 2: "crit", 3: "content type", 4: "kid", 5: "IV", 6: "Partial IV"}
_ED25519_RAW_BYTES: Final = 32

JsonValue: TypeAlias = "dict[str, JsonValue] | list[JsonValue] | str | int | bool | None"


@dataclasses.dataclass(frozen=True, slots=True)
class Inspection:
    """What ``smartlic-inspect`` shows: a JSON document, lines for people, an exit code."""

    document: dict[str, Any] | None
    """None when the input is not a COSE_Sign1 at all."""
    lines: tuple[str, ...]
    exit_code: int


def inspect_message(data: bytes, key: VerifyingKey | None = None) -> Inspection:
    """Decode ``data`` (COSE_Sign1 bytes) and, when ``key`` is given, verify it. Pure."""
    try:
        envelope = parse_sign1(data)
    except ProtocolError as exc:
        return Inspection(
            None, (f"{PROG}: not a COSE_Sign1 message: {exc.message}",), EXIT_MALFORMED
        )
    document: dict[str, Any] = {"envelope": _envelope_json(envelope, data)}
    lines: list[str] = []
    message: Message | None = None
    payload_error = ""
    try:
        decoded = decode_payload(envelope.payload)
    except ProtocolError as exc:
        payload_error = exc.message
        document["message_type"] = None
        document["payload_error"] = f"{exc.code.name}: {exc.message}"
        shown, hidden = _tokens_hidden(_cbor_json(envelope.payload))
        # The bytes would show the token's secret that the decoded view hides, and hold it
        # too where there is no decoded view (CBOR the strict decoder refuses).
        hidden = hidden or TOKEN_PREFIX.encode() in envelope.payload.lower()
        document["payload_hex"] = HIDDEN_TOKEN if hidden else envelope.payload.hex()
        document["payload_cbor"] = shown
    else:
        message = decoded
        document["message_type"] = _json(decoded.message_type)
        document["payload"] = _message_json(decoded)
    exit_code = EXIT_OK
    if key is None:
        document["signature"] = "not checked"
    else:
        verdict = _verify(envelope, message, key)
        document["signature"] = verdict
        if message is None:
            document["signature_note"] = (
                "checked without external AAD: the payload names no smartlic device"
            )
        lines.append(f"signature: {verdict}")
        if verdict != "valid":
            exit_code = EXIT_BAD_SIGNATURE
    if message is None:
        lines.append(f"{PROG}: not a smartlic message: {payload_error}")
        exit_code = exit_code or EXIT_MALFORMED
    return Inspection(document, tuple(lines), exit_code)


def _verify(envelope: Sign1, message: Message | None, key: VerifyingKey) -> str:
    try:
        if message is None:
            # No device id to bind: check the plain COSE_Sign1, without external AAD.
            envelope.verify(key)
        else:
            Opened(envelope=envelope, message=message).verify(key)
    except ProtocolError as exc:
        return f"INVALID ({exc.message})"
    return "valid"


def load_key(data: bytes) -> VerifyingKey:
    """A verifying key from a PEM file (public, or private to use its public half) or from
    32 raw bytes (Ed25519)."""
    if data.lstrip().startswith(b"-----BEGIN"):
        if b"PRIVATE KEY" in data:
            return SigningKey.from_pem(data).public
        return VerifyingKey.from_pem(data)
    if len(data) == _ED25519_RAW_BYTES:
        return VerifyingKey.from_raw(KeyType.ED25519, data)
    raise LocalProtocolError(
        ErrorCode.MALFORMED_KEY,
        f"a key file is PEM or 32 raw Ed25519 bytes; this one is {len(data)} bytes of neither",
    )


def read_hex(text: bytes) -> bytes:
    """Bytes from hex text; whitespace anywhere is ignored."""
    digits = b"".join(text.split())
    try:
        return binascii.unhexlify(digits)
    except (binascii.Error, ValueError) as exc:
        raise LocalProtocolError(
            ErrorCode.INVALID_ARGUMENT, f"input is not hexadecimal ({exc})"
        ) from None


def _envelope_json(envelope: Sign1, data: bytes) -> dict[str, Any]:
    return {
        "tagged": data[:1] == b"\xd2",
        "size": len(data),
        "protected": _header_json(envelope.protected_header),
        "unprotected": _header_json(envelope.unprotected_header),
        "algorithm": _json(envelope.algorithm),
        "kid": envelope.kid.hex() if envelope.kid is not None else None,
        "payload_size": len(envelope.payload),
    }


def _header_json(header: Mapping[Any, Any]) -> dict[str, JsonValue]:
    return {_HEADER_NAMES.get(label, str(label)): _json(value) for label, value in header.items()}


def _cbor_json(payload: bytes) -> JsonValue:
    try:
        return _json(cbor.decode(payload))
    except ProtocolError:
        return None


HIDDEN_TOKEN: Final = "<hidden: it holds a registration token>"


def _tokens_hidden(value: JsonValue) -> tuple[JsonValue, bool]:
    """``value`` with every text that looks like a registration token hidden, and whether
    there was one: a payload refused for another field still carries the token's secret."""
    if isinstance(value, str):
        # A byte string is shown as hex: a token sent as bytes is one all the same.
        text = _text_of_hex(value)
        hidden = value.strip().lower().startswith(TOKEN_PREFIX) or (
            text is not None and TOKEN_PREFIX in text.lower()
        )
        return (HIDDEN_TOKEN if hidden else value), hidden
    if isinstance(value, list):
        items = [_tokens_hidden(item) for item in value]
        return [item for item, _ in items], any(hidden for _, hidden in items)
    if isinstance(value, dict):
        entries = {key: _tokens_hidden(item) for key, item in value.items()}
        return (
            {key: item for key, (item, _) in entries.items()},
            any(hidden for _, hidden in entries.values()),
        )
    return value, False


def _text_of_hex(value: str) -> str | None:
    try:
        return bytes.fromhex(value).decode("latin-1")
    except ValueError:
        return None


def _message_json(message: Message) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for field in dataclasses.fields(message):
        if field.name == "message_type":
            continue
        document[field.name] = _json(getattr(message, field.name))
    if isinstance(message, RegistrationRequest):
        # The token's secret stays hidden: an inspected message often ends up in a ticket.
        token = message.registration_token
        document["device_id"] = message.device_id
        document["token"] = {
            "token_id": token.token_id_text,
            "secret": "<hidden>",
            "collector_fingerprint": format_fingerprint(token.collector_fingerprint),
        }
    return document


def _json(value: object) -> JsonValue:  # noqa: PLR0911 -- one return per value kind shown
    if isinstance(value, IntEnum):
        return {"name": value.name, "value": int(value)}
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, Udi):
        return {
            "product_id": value.product_id,
            "serial": value.serial,
            "device_id": value.device_id,
        }
    if isinstance(value, VerifyingKey):
        return {
            "type": value.key_type.value,
            "fingerprint": format_fingerprint(value.fingerprint),
            "kid": value.kid.hex(),
            "raw": value.raw.hex(),
        }
    if isinstance(value, TagCompliance):
        return {
            "status": value.status.name,
            "in_use": value.in_use,
            "entitled": value.entitled,
            "shortfall": value.shortfall,
        }
    if isinstance(value, cbor2.CBORTag):
        return {"tag": value.tag, "value": _json(value.value)}
    if isinstance(value, dict | cbor2.FrozenDict):
        return {str(_json(k)): _json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json(item) for item in value]
    if value is None or isinstance(value, str | int):
        return value
    return repr(value)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Decode a smartlic message (COSE_Sign1) and print it as JSON; "
        "with --key, also verify its signature.",
        epilog="Exit status: 0 valid smartlic message (and signature, if checked); "
        "1 invalid signature; 2 malformed input, not a smartlic message, or unreadable file.",
    )
    parser.add_argument("file", metavar="FILE", help="the message, or - for standard input")
    parser.add_argument("--hex", action="store_true", help="the input is hexadecimal text")
    parser.add_argument(
        "--key",
        metavar="PUBKEY_FILE",
        help="verify with this key: PEM (public or private) or 32 raw Ed25519 bytes",
    )
    return parser


READ_LIMIT: Final = 4 * cbor.MAX_MESSAGE_BYTES
"""Bytes read of an input at most: a message twice over as hex, with room for line breaks.
More is refused unread, so a huge file (or /dev/zero) costs no memory."""


def _read(path: str) -> bytes:
    if path == "-":
        data = sys.stdin.buffer.read(READ_LIMIT + 1)
    else:
        with open(path, "rb") as file:  # noqa: PTH123 -- the console shell; pathlib stays out of protocol/
            data = file.read(READ_LIMIT + 1)
    if len(data) > READ_LIMIT:
        raise LocalProtocolError(
            ErrorCode.OVERSIZE,
            f"{path} is over {READ_LIMIT} bytes; a smartlic message is at most "
            f"{cbor.MAX_MESSAGE_BYTES}",
        )
    return data


def main(argv: Sequence[str] | None = None) -> int:
    """The console script: read, inspect, print. Never a traceback, always an exit code."""
    args = _parser().parse_args(argv)
    try:
        data = _read(args.file)
        if args.hex:
            data = read_hex(data)
        key = None if args.key is None else load_key(_read(args.key))
        inspection = inspect_message(data, key)
    except OSError as exc:
        _say(f"{PROG}: cannot read {exc.filename or args.file}: {exc.strerror}")
        return EXIT_MALFORMED
    except ProtocolError as exc:
        _say(f"{PROG}: {exc.message}")
        return EXIT_MALFORMED
    except Exception as exc:  # noqa: BLE001 -- the promise is one line, never a traceback
        _say(f"{PROG}: internal error: {type(exc).__name__}: {exc}")
        return EXIT_MALFORMED
    if inspection.document is not None:
        text = json.dumps(inspection.document, indent=2, ensure_ascii=False)
        try:
            sys.stdout.write(text + "\n")
        except UnicodeEncodeError:
            # An output that cannot take UTF-8 (PYTHONIOENCODING=ascii, a C locale) gets the
            # same JSON with its non-ASCII text escaped, rather than a traceback.
            sys.stdout.write(json.dumps(inspection.document, indent=2) + "\n")
    for line in inspection.lines:
        _say(line)
    return inspection.exit_code


def _say(line: str) -> None:
    sys.stderr.write(line + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
