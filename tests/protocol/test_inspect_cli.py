"""smartlic-inspect: JSON on stdout, a verdict and one-line reasons on stderr, exit codes 0/1/2."""

from __future__ import annotations

import dataclasses
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from protocol_strategies import (
    COLLECTOR_ED25519,
    DEVICE_ED25519,
    DEVICE_P256,
    sample_messages,
    three_tag_report,
)
from smartlic.protocol import RegistrationRequest, RegistrationResult, cbor, seal
from smartlic.protocol.codec import to_wire
from smartlic.protocol.cose import prepare_sign1
from smartlic.protocol.envelope import device_aad
from smartlic.protocol.inspect import (
    EXIT_BAD_SIGNATURE,
    EXIT_MALFORMED,
    EXIT_OK,
    HIDDEN_TOKEN,
    READ_LIMIT,
    inspect_message,
    main,
)

if TYPE_CHECKING:
    from smartlic.protocol import SigningKey

VECTOR: Final = (
    Path(__file__).parent / "vectors" / "cose-wg" / "eddsa-examples" / "eddsa-sig-01.json"
)


class Run:
    """One in-process run of the console script."""

    def __init__(self, code: int, out: str, err: str) -> None:
        self.code = code
        self.out = out
        self.err_lines = err.splitlines()

    @property
    def document(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.out)
        return document


class Invoke(Protocol):
    def __call__(self, *argv: str, stdin: bytes = b"") -> Run: ...


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Invoke:
    def invoke(*argv: str, stdin: bytes = b"") -> Run:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
        code = main(list(argv))
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return invoke


def _write(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def _message(tmp_path: Path, key: SigningKey = DEVICE_ED25519) -> str:
    return _write(tmp_path, "report.cose", seal(three_tag_report(), key))


def test_valid_report_with_its_pem_key(run: Invoke, tmp_path: Path) -> None:
    """A signed report and its signer's PEM key: exit 0, the payload as JSON, 'signature: valid'."""
    key = _write(tmp_path, "device.pem", DEVICE_ED25519.public.to_pem())

    result = run(_message(tmp_path), "--key", key)

    assert EXIT_OK == result.code
    assert ["signature: valid"] == result.err_lines
    document = result.document
    assert "valid" == document["signature"]
    assert {"name": "USAGE_REPORT", "value": 3} == document["message_type"]
    assert {"name": "ED25519", "value": -19} == document["envelope"]["algorithm"]
    assert DEVICE_ED25519.public.kid.hex() == document["envelope"]["kid"]
    assert {"alg": -19} == document["envelope"]["protected"]
    assert "ISR4331~K9:FDO21520TGH" == document["payload"]["device_id"]
    assert 1 == document["payload"]["counts"]["throughput-1g"]


def test_raw_ed25519_key_file(run: Invoke, tmp_path: Path) -> None:
    """A key file of 32 raw bytes is an Ed25519 public key."""
    key = _write(tmp_path, "device.key", DEVICE_ED25519.public.raw)

    assert EXIT_OK == run(_message(tmp_path), "--key", key).code


def test_private_pem_key_verifies_with_its_public_half(run: Invoke, tmp_path: Path) -> None:
    """An operator may point --key at the device's own private key file."""
    key = _write(tmp_path, "device-private.pem", DEVICE_P256.to_pem())

    assert EXIT_OK == run(_message(tmp_path, DEVICE_P256), "--key", key).code


def test_without_a_key_nothing_is_verified(run: Invoke, tmp_path: Path) -> None:
    """No --key: exit 0, nothing on stderr, and the document says the signature was not checked."""
    result = run(_message(tmp_path))

    assert (EXIT_OK, []) == (result.code, result.err_lines)
    assert "not checked" == result.document["signature"]


def test_wrong_key_is_an_invalid_signature(run: Invoke, tmp_path: Path) -> None:
    """Another key: exit 1, and the one stderr line says INVALID with the reason."""
    key = _write(tmp_path, "collector.pem", COLLECTOR_ED25519.public.to_pem())

    result = run(_message(tmp_path), "--key", key)

    assert EXIT_BAD_SIGNATURE == result.code
    assert ["signature: INVALID (kid does not name the expected signer)"] == result.err_lines


def test_tampered_message_is_an_invalid_signature(run: Invoke, tmp_path: Path) -> None:
    """A changed signature byte: the payload still decodes, the verdict is INVALID, exit 1."""
    data = bytearray(seal(three_tag_report(), DEVICE_ED25519))
    data[-1] ^= 1
    key = _write(tmp_path, "device.pem", DEVICE_ED25519.public.to_pem())

    result = run(_write(tmp_path, "bad.cose", bytes(data)), "--key", key)

    assert EXIT_BAD_SIGNATURE == result.code
    assert ["signature: INVALID (signature does not verify)"] == result.err_lines
    assert "INVALID (signature does not verify)" == result.document["signature"]


def test_hex_from_stdin(run: Invoke) -> None:
    """--hex reads hexadecimal text; whitespace and newlines anywhere are fine."""
    text = seal(three_tag_report(), DEVICE_ED25519).hex()
    spaced = " ".join(text[i : i + 8] for i in range(0, len(text), 8)) + "\n"

    result = run("-", "--hex", stdin=spaced.encode())

    assert EXIT_OK == result.code
    assert "USAGE_REPORT" == result.document["message_type"]["name"]


@pytest.mark.parametrize(
    ("argv", "stdin", "reason"),
    [
        pytest.param(["-", "--hex"], b"d2 zz", "input is not hexadecimal", id="bad-hex"),
        pytest.param(["-"], b"", "not a COSE_Sign1 message: empty input", id="empty"),
        pytest.param(["-"], b"\xa1\x01\x02", "not a COSE_Sign1 message", id="a-map"),
        pytest.param(["-"], b"\xff\x00garbage", "not a COSE_Sign1 message", id="garbage"),
        pytest.param(["/nonexistent/file"], b"", "cannot read /nonexistent/file", id="no-file"),
    ],
)
def test_malformed_input_exits_2_with_one_line(
    run: Invoke, argv: list[str], stdin: bytes, reason: str
) -> None:
    """Malformed input: exit 2, nothing on stdout, exactly one line on stderr with the reason."""
    result = run(*argv, stdin=stdin)

    assert EXIT_MALFORMED == result.code
    assert "" == result.out
    assert 1 == len(result.err_lines)
    assert reason in result.err_lines[0]


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        pytest.param(b"0123456789", "this one is 10 bytes", id="ten-bytes"),
        pytest.param(b"-----BEGIN PUBLIC KEY-----\nnope\n", "not a PEM public key", id="bad-pem"),
    ],
)
def test_unusable_key_file_exits_2(
    run: Invoke, tmp_path: Path, content: bytes, reason: str
) -> None:
    """A key file that is neither PEM nor 32 raw bytes is refused up front."""
    key = _write(tmp_path, "key", content)

    result = run(_message(tmp_path), "--key", key)

    assert EXIT_MALFORMED == result.code
    assert 1 == len(result.err_lines)
    assert reason in result.err_lines[0]


def _vector() -> tuple[bytes, bytes]:
    vector = json.loads(VECTOR.read_text())
    return (
        bytes.fromhex(vector["output"]["cbor"]),
        bytes.fromhex(vector["input"]["sign0"]["key"]["x_hex"]),
    )


def test_foreign_cose_sign1_with_the_right_key(run: Invoke, tmp_path: Path) -> None:
    """A COSE WG Sign1 (payload 'This is the content.'): signature valid, not smartlic, exit 2."""
    message, key = _vector()

    result = run(_write(tmp_path, "vector.cose", message), "--key", _write(tmp_path, "x", key))

    assert EXIT_MALFORMED == result.code
    assert "signature: valid" == result.err_lines[0]
    assert result.err_lines[1].startswith("smartlic-inspect: not a smartlic message: ")
    assert 2 == len(result.err_lines)
    assert None is result.document["message_type"]
    assert b"This is the content.".hex() == result.document["payload_hex"]
    assert "without external AAD" in result.document["signature_note"]


def test_foreign_cose_sign1_with_a_wrong_key_is_an_invalid_signature(
    run: Invoke, tmp_path: Path
) -> None:
    """When the signature is checked and fails, exit 1 wins over 'not a smartlic message'."""
    message, _ = _vector()
    key = _write(tmp_path, "device.key", DEVICE_ED25519.public.raw)

    result = run(_write(tmp_path, "vector.cose", message), "--key", key)

    assert EXIT_BAD_SIGNATURE == result.code
    assert result.err_lines[0].startswith("signature: INVALID")


def test_registration_token_secret_is_not_printed() -> None:
    """An inspected registration request shows the token id and fingerprint, never the secret."""
    request = next(m for m in sample_messages() if isinstance(m, RegistrationRequest))

    inspection = inspect_message(seal(request, DEVICE_ED25519))

    assert inspection.document is not None
    token = inspection.document["payload"]["token"]
    assert "<hidden>" == token["secret"]
    assert request.registration_token.secret.hex() not in json.dumps(inspection.document)


@pytest.mark.parametrize("index", range(len(sample_messages())))
def test_every_message_type_renders_as_json(index: int) -> None:
    """Each message type's payload becomes a JSON document without loss of its fields."""
    message = sample_messages()[index]

    inspection = inspect_message(seal(message, COLLECTOR_ED25519), COLLECTOR_ED25519.public)

    assert EXIT_OK == inspection.exit_code
    assert inspection.document is not None
    json.dumps(inspection.document)
    assert message.message_type.name == inspection.document["message_type"]["name"]


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=200)
    | st.sampled_from([seal(m, DEVICE_ED25519) for m in sample_messages()]).flatmap(
        lambda data: st.integers(0, len(data) - 1).map(
            lambda i: data[:i] + bytes([data[i] ^ 0x41]) + data[i + 1 :]
        )
    )
)
def test_inspection_of_any_bytes_gives_a_verdict(data: bytes) -> None:
    """Any input: a document or none, an exit code of 0, 1 or 2, and a reason when not 0."""
    inspection = inspect_message(data, DEVICE_ED25519.public)

    assert inspection.exit_code in {EXIT_OK, EXIT_BAD_SIGNATURE, EXIT_MALFORMED}
    if inspection.exit_code != EXIT_OK:
        assert inspection.lines
    if inspection.document is not None:
        json.dumps(inspection.document)


def test_missing_argument_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """No FILE: argparse prints usage and exits 2."""
    with pytest.raises(SystemExit) as caught:
        main([])

    assert 2 == caught.value.code
    assert "usage: smartlic-inspect" in capsys.readouterr().err


def test_console_entry_point_never_prints_a_traceback(tmp_path: Path) -> None:
    """Run as a program on garbage: exit 2, one line on stderr, no traceback."""
    result = subprocess.run(
        [sys.executable, "-m", "smartlic.protocol.inspect", "-"],
        input=b"\x9f\x9f\x9f",
        capture_output=True,
        check=False,
        timeout=60,
        cwd=tmp_path,
    )

    assert EXIT_MALFORMED == result.returncode
    assert b"" == result.stdout
    assert 1 == len(result.stderr.splitlines())
    assert b"Traceback" not in result.stderr


def _refused_registration(tmp_path: Path) -> tuple[str, str]:
    """A signed registration request whose payload is refused (its issue time is out of
    range), and the token it carries."""
    request = next(m for m in sample_messages() if isinstance(m, RegistrationRequest))
    wire = to_wire(request)
    wire[7] = 2**41
    aad = device_aad(request.device_id)
    to_sign = prepare_sign1(cbor.encode(wire), DEVICE_ED25519.public, external_aad=aad)
    sealed = to_sign.finish(DEVICE_ED25519.sign(to_sign.to_be_signed))
    return _write(tmp_path, "request.cose", sealed), request.token


def test_a_refused_registration_payload_still_hides_its_token(run: Invoke, tmp_path: Path) -> None:
    """The fallback view of a payload it cannot read showed the token, secret and all, in
    ``payload_cbor`` and in ``payload_hex``: docs/protocol.md says the secret is never printed."""
    path, token = _refused_registration(tmp_path)

    result = run(path)

    assert EXIT_MALFORMED == result.code
    assert token not in result.out
    assert token.encode().hex() not in result.out
    assert HIDDEN_TOKEN == result.document["payload_cbor"]["5"]


def test_an_output_that_cannot_take_utf8_gets_the_json_escaped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PYTHONIOENCODING=ascii: a traceback and exit 1 (the code of a bad signature) once."""
    notice = next(m for m in sample_messages() if isinstance(m, RegistrationResult))
    message = dataclasses.replace(notice, smart_account="Société Générale")
    path = _write(tmp_path, "result.cose", seal(message, COLLECTOR_ED25519))
    out = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
    monkeypatch.setattr(sys, "stdout", out)

    code = main([path])

    out.seek(0)
    assert (EXIT_OK, "Société Générale") == (
        code,
        json.loads(out.read())["payload"]["smart_account"],
    )


def test_an_input_far_over_a_message_is_refused_unread(run: Invoke, tmp_path: Path) -> None:
    """A 300 MB file was read whole before its size was judged."""
    path = _write(tmp_path, "huge", b"\0" * (READ_LIMIT + 1))

    result = run(path)

    assert EXIT_MALFORMED == result.code
    assert [
        f"smartlic-inspect: {path} is over {READ_LIMIT} bytes; a smartlic message is at most 4096"
    ] == result.err_lines


def test_a_registration_payload_the_decoder_refuses_keeps_its_token_hidden(
    run: Invoke, tmp_path: Path
) -> None:
    """Keys out of order: no decoded view, and ``payload_hex`` printed the token whole."""
    request = next(m for m in sample_messages() if isinstance(m, RegistrationRequest))
    unordered = cbor2.dumps(dict(reversed(list(to_wire(request).items()))))
    aad = device_aad(request.device_id)
    to_sign = prepare_sign1(unordered, DEVICE_ED25519.public, external_aad=aad)
    path = _write(
        tmp_path, "request.cose", to_sign.finish(DEVICE_ED25519.sign(to_sign.to_be_signed))
    )

    result = run(path)

    assert (EXIT_MALFORMED, HIDDEN_TOKEN) == (result.code, result.document["payload_hex"])
    assert request.token.encode().hex() not in result.out
