"""messages.cddl (RFC 8610) describes every payload the code emits, and refuses broken ones.

pycddl wraps the Rust ``cddl`` crate, which differs from RFC 8610 in two ways this test works
around (the grammar file itself stays as the RFC reads):

* ``.regexp`` searches instead of matching the whole string (RFC 8610 §3.8.3 uses XSD regular
  expressions, which are implicitly anchored), so each pattern is wrapped in ``^(?:...)$``.
* A control on the key type of a ``*`` map entry is checked against the map itself
  (anweiss/cddl#675), so ``license-tag`` keys are validated as plain ``tstr`` by pycddl and
  against the grammar's own regular expression here, in Python.
* A type choice between map rules mis-validates: ``smartlic-payload`` accepts the array
  ``[3, 1]``, and rejects an out-of-compliance notice that its own rule accepts (a nested
  choice, ``tag-compliance``, leaks out). So each payload is validated against the rule of its
  own message type, which is also the stronger check, and "conforms" means "some message
  type's rule accepts it".
"""

from __future__ import annotations

import re
from importlib import resources
from typing import Any, Final

import cbor2
import pycddl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from protocol_strategies import MESSAGE_STRATEGIES, three_tag_report
from smartlic.protocol import (
    ErrorCode,
    MessageType,
    RemoteProtocolError,
    decode_payload,
    encode_payload,
)
from smartlic.protocol import cbor as cbor_codec
from smartlic.protocol.codec import LAYOUTS, Key, to_wire
from smartlic.protocol.fields import LICENSE_TAG_RE

GRAMMAR: Final = resources.files("smartlic.protocol").joinpath("messages.cddl").read_text()
_REGEXP: Final = re.compile(r'\.regexp "([^"]*)"')
_LICENSE_TAG_RULE: Final = re.compile(r'^license-tag = tstr \.regexp "([^"]*)"$', re.MULTILINE)


def _for_pycddl(grammar: str) -> str:
    plain_tags = _LICENSE_TAG_RULE.sub("license-tag = tstr", grammar)
    return _REGEXP.sub(lambda m: f'.regexp "^(?:{m.group(1)})$"', plain_tags)


RULES: Final = {
    MessageType.REGISTRATION_REQUEST: "registration-request",
    MessageType.REGISTRATION_RESULT: "registration-result",
    MessageType.USAGE_REPORT: "usage-report",
    MessageType.AUTHORIZATION: "authorization",
    MessageType.OUT_OF_COMPLIANCE: "out-of-compliance-notice",
    MessageType.ERROR_NOTICE: "error-notice",
    MessageType.DEREGISTRATION_REQUEST: "deregistration-request",
    MessageType.DEREGISTRATION_RESULT: "deregistration-result",
}
SCHEMAS: Final = {
    kind: pycddl.Schema(f"payload = {rule}\n{_for_pycddl(GRAMMAR)}") for kind, rule in RULES.items()
}
LICENSE_TAG_PATTERN: Final = re.compile(_LICENSE_TAG_RULE.search(GRAMMAR).group(1))  # type: ignore[union-attr]  # the rule exists; test_grammar_defines_license_tag checks


def _valid_as(kind: MessageType, payload: bytes) -> bool:
    try:
        SCHEMAS[kind].validate_cbor(payload)
    except pycddl.ValidationError:
        return False
    return True


def _conforms(payload: bytes) -> bool:
    if not any(_valid_as(kind, payload) for kind in MessageType):
        return False
    return _license_tags_conform(cbor2.loads(payload))


def _license_tags_conform(wire: Any) -> bool:
    if not isinstance(wire, dict):
        return True
    tags = {**wire.get(int(Key.COUNTS), {}), **wire.get(int(Key.TAGS), {})}
    return all(isinstance(tag, str) and LICENSE_TAG_PATTERN.fullmatch(tag) for tag in tags)


def test_grammar_defines_license_tag_like_the_code() -> None:
    """The CDDL's license-tag pattern is the one fields.py enforces."""
    assert LICENSE_TAG_RE.pattern == LICENSE_TAG_PATTERN.pattern


def test_grammar_lists_every_error_code() -> None:
    """error-code in the CDDL enumerates exactly ErrorCode's values."""
    rule = GRAMMAR[GRAMMAR.index("error-code =") :]
    listed = {int(n) for n in re.findall(r"\b(\d{3})\b", rule)}

    assert {int(code) for code in ErrorCode} == listed


def test_grammar_names_every_message_type() -> None:
    """Each message type number appears as key 0's value in one map of the grammar."""
    used = [int(n) for n in re.findall(r"^  0 => (\d+),", GRAMMAR, re.MULTILINE)]

    assert sorted(int(t) for t in MessageType) == sorted(used)
    assert set(MessageType) == set(LAYOUTS)


@pytest.mark.parametrize("kind", sorted(MESSAGE_STRATEGIES))
@settings(max_examples=60)
@given(data=st.data())
def test_every_emitted_payload_conforms(kind: str, data: st.DataObject) -> None:
    """Whatever the code encodes validates against its message type's rule in messages.cddl."""
    message = data.draw(MESSAGE_STRATEGIES[kind])
    payload = encode_payload(message)

    SCHEMAS[message.message_type].validate_cbor(payload)
    assert _license_tags_conform(cbor2.loads(payload))


def test_each_rule_accepts_only_its_own_message_type() -> None:
    """A usage report is not an authorization: the rules are told apart by key 0."""
    payload = encode_payload(three_tag_report())

    assert [MessageType.USAGE_REPORT] == [kind for kind in MessageType if _valid_as(kind, payload)]


def test_every_message_type_has_a_rule() -> None:
    """Each message type names a rule of the grammar."""
    assert set(MessageType) == set(RULES)
    for rule in RULES.values():
        assert re.search(rf"^{rule} = {{", GRAMMAR, re.MULTILINE), rule


def _report_with(**changes: Any) -> bytes:
    wire = to_wire(three_tag_report())
    for name, value in changes.items():
        wire[int(Key[name.upper()])] = value
    return cbor_codec.encode(wire)


NONCONFORMING = [
    pytest.param(_report_with(version=2), id="version-2"),
    pytest.param(_report_with(type=99), id="unknown-type"),
    pytest.param(_report_with(seq=0), id="seq-0"),
    pytest.param(_report_with(seq="1"), id="seq-as-text"),
    pytest.param(_report_with(issued_at=2**40 + 1), id="time-after-2-pow-40"),
    pytest.param(_report_with(nonce=b"short"), id="nonce-5-bytes"),
    pytest.param(_report_with(nonce=None), id="nonce-null"),
    pytest.param(_report_with(device_id="no serial"), id="device-id-without-colon"),
    pytest.param(_report_with(device_id="x ISR:1 y"), id="device-id-with-junk-around"),
    pytest.param(_report_with(counts={"Bad Tag": 1}), id="license-tag-uppercase"),
    pytest.param(_report_with(counts={"a": -1}), id="negative-count"),
    pytest.param(_report_with(counts={f"t{i}": 1 for i in range(65)}), id="65-tags"),
    pytest.param(_report_with(in_reply_to=1), id="key-of-another-message"),
    pytest.param(cbor_codec.encode({**to_wire(three_tag_report()), 99: 0}), id="unknown-key"),
    pytest.param(
        cbor_codec.encode({k: v for k, v in to_wire(three_tag_report()).items() if k != Key.SEQ}),
        id="missing-seq",
    ),
    pytest.param(cbor_codec.encode([3, 1]), id="array"),
]


@pytest.mark.parametrize("payload", NONCONFORMING)
def test_broken_payload_does_not_conform_and_is_refused(payload: bytes) -> None:
    """A payload the grammar refuses is refused by the decoder too: they agree."""
    assert not _conforms(payload)
    with pytest.raises(RemoteProtocolError):
        decode_payload(payload)


def test_typical_report_conforms() -> None:
    """The report in docs/protocol.md validates."""
    assert _conforms(encode_payload(three_tag_report()))


def test_schema_file_ships_with_the_package() -> None:
    """messages.cddl is package data, readable wherever smartlic is installed."""
    assert GRAMMAR.startswith("; smartlic protocol version 1")
