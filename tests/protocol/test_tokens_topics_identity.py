"""Registration tokens, MQTT topic names, keys and fingerprints, and the UDI ↔ device id mapping."""

from __future__ import annotations

import hashlib
import subprocess

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from hypothesis import given, settings
from hypothesis import strategies as st
from protocol_strategies import COLLECTOR_ED25519, DEVICE_ED25519, DEVICE_P256, udis
from smartlic.protocol import (
    ErrorCode,
    KeyType,
    LocalProtocolError,
    RegistrationToken,
    RemoteProtocolError,
    SigningKey,
    Topics,
    Udi,
    VerifyingKey,
    fields,
    format_fingerprint,
    identity,
    parse_token,
)
from smartlic.protocol.identity import check_device_id
from smartlic.protocol.tokens import TOKEN_TEXT_LENGTH

TOKEN = RegistrationToken(
    token_id=bytes.fromhex("0011223344556677"),
    secret=bytes(range(16)),
    collector_fingerprint=COLLECTOR_ED25519.public.fingerprint,
)

# ---------------------------------------------------------------- tokens


def _typo(text: str, index: int) -> str:
    return text[:index] + ("B" if text[index] == "A" else "A") + text[index + 1 :]


tokens = st.builds(
    RegistrationToken,
    token_id=st.binary(min_size=8, max_size=8),
    secret=st.binary(min_size=16, max_size=16),
    collector_fingerprint=st.binary(min_size=32, max_size=32),
)


@settings(max_examples=200)
@given(tokens)
def test_token_text_round_trip(token: RegistrationToken) -> None:
    """parse_token(str(t)) == t, and the text is 85 printable URL-safe characters."""
    text = str(token)

    assert token == parse_token(text)
    assert TOKEN_TEXT_LENGTH == len(text)
    assert text.startswith("slt1_")
    assert text.isascii()
    assert text.isprintable()


def test_token_tolerates_surrounding_whitespace() -> None:
    """A paste with a trailing newline still parses."""
    assert TOKEN == parse_token(f"  {TOKEN}\n")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        pytest.param("", "must start with", id="empty"),
        pytest.param("slt2_" + "A" * 80, "must start with", id="wrong-prefix"),
        pytest.param(str(TOKEN)[:-1], "truncated paste", id="truncated"),
        pytest.param(str(TOKEN) + "A", "characters long", id="too-long"),
        pytest.param(str(TOKEN)[:-2] + "+/", "outside base64url", id="standard-base64"),
        pytest.param(str(TOKEN)[:-1] + "é", "outside base64url", id="non-ascii"),
        pytest.param(_typo(str(TOKEN), 10), "checksum", id="one-typo"),
    ],
)
def test_malformed_token_says_why(text: str, reason: str) -> None:
    """Each kind of bad paste gets MALFORMED_TOKEN and a reason a person can act on."""
    with pytest.raises(LocalProtocolError, match=reason) as caught:
        parse_token(text)

    assert ErrorCode.MALFORMED_TOKEN == caught.value.code


def test_token_that_is_not_text_is_malformed() -> None:
    """Bytes are not a token."""
    with pytest.raises(LocalProtocolError) as caught:
        parse_token(str(TOKEN).encode())  # type: ignore[arg-type]  # the point of the test

    assert ErrorCode.MALFORMED_TOKEN == caught.value.code


def test_token_repr_hides_the_secret() -> None:
    """Logging a token object never leaks its secret."""
    assert bytes(range(16)).hex() not in repr(TOKEN)
    assert "0011223344556677" in repr(TOKEN)


def test_token_secret_matches_only_its_digest() -> None:
    """The collector stores SHA-256 of the secret and checks in constant time."""
    assert TOKEN.matches(hashlib.sha256(bytes(range(16))).digest())
    assert not TOKEN.matches(hashlib.sha256(b"other").digest())


@pytest.mark.parametrize("field", ["token_id", "secret", "collector_fingerprint"])
def test_token_parts_must_have_their_size(field: str) -> None:
    """A token cannot be built with a part of the wrong length."""
    parts = {"token_id": b"i" * 8, "secret": b"s" * 16, "collector_fingerprint": b"f" * 32}
    parts[field] += b"x"

    with pytest.raises(LocalProtocolError) as caught:
        RegistrationToken(**parts)

    assert ErrorCode.INVALID_ARGUMENT == caught.value.code


# ---------------------------------------------------------------- topics


def test_topics_for_a_device() -> None:
    """Uplink and downlink carry the device id as one level; the collector's filter is shared."""
    topics = Topics()

    assert "smartlic/v1/d/ISR4331~K9:FOC1/up" == topics.uplink("ISR4331~K9:FOC1")
    assert "smartlic/v1/d/ISR4331~K9:FOC1/down" == topics.downlink("ISR4331~K9:FOC1")
    assert "smartlic/v1/d/+/up" == topics.uplink_filter
    assert "$share/smartlic-collectors/smartlic/v1/d/+/up" == topics.shared_uplink_filter()
    assert "$share/eu/smartlic/v1/d/+/up" == topics.shared_uplink_filter("eu")


@settings(max_examples=200)
@given(udis)
def test_device_of_topic_inverts_the_builders(udi: Udi) -> None:
    """device_of_uplink(uplink(id)) == id, for every valid device id; downlink alike."""
    topics = Topics(prefix="acme/lic")

    assert udi.device_id == topics.device_of_uplink(topics.uplink(udi.device_id))
    assert udi.device_id == topics.device_of_downlink(topics.downlink(udi.device_id))


@pytest.mark.parametrize(
    "topic",
    [
        "smartlic/v1/d/A:1/down",
        "smartlic/v1/d/A:1/up/extra",
        "smartlic/v1/d/A/B:1/up",
        "smartlic/v1/d/+/up",
        "smartlic/v1/d//up",
        "other/v1/d/A:1/up",
        "smartlic/v1/d/A:1/up\x00",
        "",
    ],
)
def test_foreign_uplink_topic_is_the_senders_error(topic: str) -> None:
    """A topic of another shape is a MALFORMED_TOPIC RemoteProtocolError."""
    with pytest.raises(RemoteProtocolError) as caught:
        Topics().device_of_uplink(topic)

    assert ErrorCode.MALFORMED_TOPIC == caught.value.code


@pytest.mark.parametrize("prefix", ["", "$SYS", "/lead", "trail/", "a/+/b", "a/#", "nul\x00"])
def test_topic_prefix_must_be_plain(prefix: str) -> None:
    """Prefixes that would break topics or ACL patterns are refused up front."""
    with pytest.raises(LocalProtocolError) as caught:
        Topics(prefix=prefix)

    assert ErrorCode.INVALID_ARGUMENT == caught.value.code


@pytest.mark.parametrize("group", ["", "a/b", "+", "#"])
def test_share_group_must_be_one_plain_level(group: str) -> None:
    """A shared-subscription group name is one level without wildcards (MQTT 5 §4.8.2)."""
    with pytest.raises(LocalProtocolError):
        Topics().shared_uplink_filter(group)


def test_builders_refuse_an_invalid_device_id() -> None:
    """A device id with a wildcard or slash cannot become a topic level."""
    with pytest.raises(LocalProtocolError):
        Topics().uplink("A/#:1")


# ---------------------------------------------------------------- UDI and device id


@settings(max_examples=300)
@given(udis)
def test_device_id_maps_back_to_its_udi(udi: Udi) -> None:
    """UDI → device id → UDI is the identity; the id has no '/' so it is one topic level."""
    device_id = udi.device_id

    assert udi == Udi.from_device_id(device_id)
    assert "/" not in device_id
    assert device_id == check_device_id(device_id)


def test_device_id_spells_slash_as_tilde() -> None:
    """ISR4331/K9 + FOC1234X → ISR4331~K9:FOC1234X (docs/architecture.md)."""
    udi = Udi.parse("ISR4331/K9:FOC1234X")

    assert "ISR4331~K9:FOC1234X" == udi.device_id
    assert "ISR4331/K9:FOC1234X" == str(udi)


@pytest.mark.parametrize(
    ("product_id", "serial"),
    [
        ("", "FOC1"),
        ("ISR4331", ""),
        ("ISR 4331", "FOC1"),
        ("ISR~4331", "FOC1"),
        ("ISR:4331", "FOC1"),
        ("ISR4331", "FOC/1"),
        ("A" * 41, "FOC1"),
        ("ISR4331", "F" * 41),
        ("ISR4331", "FÖC1"),
    ],
)
def test_udi_refuses_characters_that_would_break_the_mapping(product_id: str, serial: str) -> None:
    """'~' and ':' are reserved by the device id; spaces and non-ASCII are not allowed."""
    with pytest.raises(LocalProtocolError) as caught:
        Udi(product_id=product_id, serial=serial)

    assert ErrorCode.INVALID_VALUE == caught.value.code


@pytest.mark.parametrize(("product_id", "serial"), [(1, "FOC1"), ("ISR4331", b"FOC1")])
def test_a_udi_part_that_is_not_text_is_a_wrong_type(product_id: object, serial: object) -> None:
    """As for every other field (docs/protocol.md, code 203); it was INVALID_VALUE."""
    with pytest.raises(LocalProtocolError) as caught:
        Udi(product_id=product_id, serial=serial)  # type: ignore[arg-type]  # the wrong types

    assert ErrorCode.WRONG_TYPE == caught.value.code


@pytest.mark.parametrize("text", ["ISR4331", "ISR4331:", ":FOC1"])
def test_udi_parse_needs_product_and_serial(text: str) -> None:
    """PID:SERIAL, both non-empty."""
    with pytest.raises(LocalProtocolError):
        Udi.parse(text)


@pytest.mark.parametrize("device_id", ["ISR4331", "A:B:C", "A/B:1", "A:1\n", 42])
def test_device_id_check_refuses_malformed_ids(device_id: object) -> None:
    """A device id is PRODUCT~ID:SERIAL, text, nothing else."""
    with pytest.raises(LocalProtocolError):
        check_device_id(device_id)


def test_ids_and_tags_too_long_to_be_valid_are_refused_without_being_remembered() -> None:
    """Each check caches its verdicts for speed; a 64 KiB topic or a 4 KiB device id sent
    again and again must not grow that cache with strings of any length."""
    device_cache, tag_cache = identity._cached_device_id_check, fields._cached_tag_check
    devices, tags = device_cache.cache_info().currsize, tag_cache.cache_info().currsize

    for n in range(50):
        with pytest.raises(LocalProtocolError):
            check_device_id(f"{'A' * 4000}{n}:1")
        with pytest.raises(LocalProtocolError):
            fields.license_tag(f"{'a' * 4000}{n}")

    assert (devices, tags) == (
        device_cache.cache_info().currsize,
        tag_cache.cache_info().currsize,
    )


# ---------------------------------------------------------------- keys


def test_fingerprint_is_sha256_of_the_subject_public_key_info() -> None:
    """The fingerprint is what `openssl pkey -pubout -outform DER | sha256sum` prints."""
    key = DEVICE_P256.public
    spki = key.key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )

    assert hashlib.sha256(spki).digest() == key.fingerprint
    assert key.fingerprint[:8] == key.kid


def test_fingerprint_matches_openssl() -> None:
    """Cross-check with the openssl command line, when it is installed."""
    pem = DEVICE_ED25519.public.to_pem()
    try:
        der = subprocess.run(
            ["openssl", "pkey", "-pubin", "-outform", "DER"],
            input=pem,
            capture_output=True,
            check=True,
        ).stdout
    except FileNotFoundError:
        pytest.skip("openssl is not installed")

    assert hashlib.sha256(der).digest() == DEVICE_ED25519.public.fingerprint


def test_fingerprint_format_for_people() -> None:
    """SHA256: then lowercase hex in groups of four."""
    text = format_fingerprint(bytes(range(32)))

    assert text.startswith("SHA256:0001:0203:")
    assert 7 + 64 + 15 == len(text)


@pytest.mark.parametrize("key", [DEVICE_ED25519, DEVICE_P256], ids=["ed25519", "p256"])
def test_verifying_key_survives_raw_and_pem(key: SigningKey) -> None:
    """Raw wire form and PEM both load back to the same key (same fingerprint)."""
    public = key.public

    assert public == VerifyingKey.from_raw(public.key_type, public.raw)
    assert public == VerifyingKey.from_pem(public.to_pem())
    assert key.public == SigningKey.from_pem(key.to_pem()).public


def test_raw_key_sizes() -> None:
    """Ed25519 travels as 32 bytes, P-256 as a 33-byte compressed point."""
    assert 32 == len(DEVICE_ED25519.public.raw)
    assert 33 == len(DEVICE_P256.public.raw)


def test_uncompressed_p256_point_is_accepted() -> None:
    """A 65-byte uncompressed SEC1 point loads as the same key."""
    point = DEVICE_P256.public.key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )

    assert DEVICE_P256.public == VerifyingKey.from_raw(KeyType.P256, point)


@pytest.mark.parametrize(
    ("key_type", "data"),
    [
        (KeyType.ED25519, b"\x00" * 31),
        (KeyType.P256, b"\x02" + b"\xff" * 32),
        (KeyType.P256, b"\x00" * 32),
    ],
    ids=["ed25519-31-bytes", "p256-not-on-curve", "p256-no-prefix"],
)
def test_bad_raw_key_is_malformed(key_type: KeyType, data: bytes) -> None:
    """Bytes that are no key of the type are MALFORMED_KEY."""
    with pytest.raises(LocalProtocolError) as caught:
        VerifyingKey.from_raw(key_type, data)

    assert ErrorCode.MALFORMED_KEY == caught.value.code


def test_other_curves_are_refused() -> None:
    """P-384 is not a smartlic key type."""
    with pytest.raises(LocalProtocolError) as caught:
        VerifyingKey(ec.generate_private_key(ec.SECP384R1()).public_key())

    assert ErrorCode.MALFORMED_KEY == caught.value.code


def test_pem_of_garbage_is_malformed() -> None:
    """A file that is not PEM is MALFORMED_KEY, for public and private loaders alike."""
    for load in (VerifyingKey.from_pem, SigningKey.from_pem):
        with pytest.raises(LocalProtocolError) as caught:
            load(b"-----BEGIN NONSENSE-----\n")
        assert ErrorCode.MALFORMED_KEY == caught.value.code


@pytest.mark.parametrize(
    ("key_type", "seed"),
    [(KeyType.ED25519, b"\x00" * 31), (KeyType.P256, b"\x00" * 47)],
    ids=["ed25519-31", "p256-47"],
)
def test_seed_too_short_is_refused(key_type: KeyType, seed: bytes) -> None:
    """Keys are made from enough caller-supplied randomness."""
    with pytest.raises(LocalProtocolError) as caught:
        SigningKey.from_seed(key_type, seed)

    assert ErrorCode.INVALID_ARGUMENT == caught.value.code


def test_seeded_keys_are_reproducible() -> None:
    """The same seed gives the same key (the protocol draws no randomness of its own)."""
    seed = bytes(range(64))

    assert (
        SigningKey.from_seed(KeyType.P256, seed).public
        == SigningKey.from_seed(KeyType.P256, seed).public
    )
    assert (
        SigningKey.from_seed(KeyType.ED25519, seed[:32]).public
        == SigningKey(ed25519.Ed25519PrivateKey.from_private_bytes(seed[:32])).public
    )
