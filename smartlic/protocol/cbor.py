"""Deterministic CBOR (RFC 8949 §4.2.1) over cbor2, with a strict decoder for remote input.

Encoding: cbor2 already writes the shortest form of every integer and length (§4.2.1, first
two rules) and never writes indefinite lengths unless asked. What it does not do is the
*bytewise lexicographic* order of map keys that §4.2.1 requires: its ``canonical=True`` uses
the older length-first order of RFC 7049 §3.9, which differs for e.g. keys ``24`` and ``-1``.
So :func:`encode` orders every map itself and lets cbor2 write the result as-is.

Decoding: the fast path is cbor2's C decoder followed by re-encoding the value and comparing
bytes. Equal bytes prove the input was deterministic: minimal heads, definite lengths, sorted
unique keys, no trailing bytes. Only when they differ (or cbor2 refuses the input) do we walk
the bytes in Python to say precisely *which* rule was broken, so honest traffic pays a few
microseconds and bad input gets a specific error code.

Equal bytes do not prove the input was *plain*, though: cbor2 turns floats, bignums (tags 2/3),
UUIDs (tag 37) and ``undefined`` into Python values that re-encode to the very same bytes. So
the fast path also checks the decoded value's types (:func:`_check_plain`); smartlic's data
model is integers within 64 bits, byte and text strings, arrays, maps, ``true``, ``false`` and
``null``, plus one tag on the outermost item for the caller to interpret (COSE_Sign1's 18).
That tag is read here, not by cbor2, which would interpret the tags it knows (a date, a
bignum) and fail on content that is well-formed all the same. A tag counts as one level of
nesting, as cbor2's ``max_depth`` counts it.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Final

import cbor2

from smartlic.protocol.errors import ErrorCode, RemoteProtocolError

if TYPE_CHECKING:
    from collections.abc import Mapping

MAX_MESSAGE_BYTES: Final = 4096
"""Largest message either side accepts; a 3-tag usage report is under 200 bytes."""

MAX_DEPTH: Final = 6
"""Deepest container nesting in any smartlic structure (envelope or payload) is 3."""

_MAJOR_UINT, _MAJOR_NINT, _MAJOR_BSTR, _MAJOR_TSTR = 0, 1, 2, 3
_MAJOR_ARRAY, _MAJOR_MAP, _MAJOR_TAG, _MAJOR_SIMPLE = 4, 5, 6, 7
_BIGNUM_TAGS: Final = frozenset((2, 3))
_BIGNUMS_REFUSED: Final = "bignums (tags 2 and 3, RFC 8949 §3.4.3) are not allowed"
_ALLOWED_SIMPLE: Final = frozenset({20, 21, 22})  # false, true, null
_INDEFINITE: Final = 31
_SCALARS: Final = frozenset({int, str, bytes, bool, type(None), float})
_PLAIN_SCALARS: Final = frozenset({bytes, str, bool, type(None)})
"""Decoded types that are plain as they are (integers need their range checked)."""
_INT_MIN: Final = -(2**64)
_INT_MAX: Final = 2**64 - 1


class _Sink(bytearray):
    """Where a reused encoder writes: a growing buffer whose ``write`` is ``extend`` (in C)."""

    write = bytearray.extend


_ENCODERS: list[tuple[_Sink, cbor2.CBOREncoder]] = []
"""Idle encoders, each writing to its own buffer.

``cbor2.dumps`` builds a buffer and an encoder for every call, which costs more than encoding
a whole message (3.7 µs against 1.5 µs here). Every message sent and received is encoded at
least once, so encoders are reused: taken from this list and put back, which is atomic under
the GIL, so threads never share one. An encoder whose encoding failed is dropped.
"""


def _dumps(value: Any) -> bytes:
    try:
        sink, encoder = _ENCODERS.pop()
    except IndexError:
        sink = _Sink()
        encoder = cbor2.CBOREncoder(sink)  # type: ignore[arg-type]  # any object with write() will do
    encoder.encode(value)
    data = bytes(sink)
    sink.clear()
    _ENCODERS.append((sink, encoder))
    return data


def encode(value: Any) -> bytes:
    """Encode ``value`` deterministically (RFC 8949 §4.2.1)."""
    return _dumps(_ordered(value))


def encode_ordered(value: Any) -> bytes:
    """Encode ``value`` whose maps are already in deterministic key order, as they are.

    For callers that build their maps in order (the payload codec); :func:`encode` is the
    general one. A map out of order here would be written out of order.
    """
    return _dumps(value)


def sorted_items(mapping: Mapping[Any, Any]) -> list[tuple[Any, Any]]:
    """``mapping``'s items in deterministic key order (RFC 8949 §4.2.1)."""
    if len(mapping) < 2:
        return list(mapping.items())
    return sorted(mapping.items(), key=_key_order)


def _ordered(value: Any) -> Any:
    kind = type(value)
    if kind in _SCALARS:
        return value
    if isinstance(value, dict | cbor2.FrozenDict):
        return {k: _ordered(v) for k, v in sorted(value.items(), key=_key_order)}
    if isinstance(value, list | tuple):
        return [_ordered(item) for item in value]
    if isinstance(value, cbor2.CBORTag):
        return cbor2.CBORTag(value.tag, _ordered(value.value))
    return value


def _key_order(item: tuple[Any, Any]) -> bytes:
    return _encoded_key(item[0])


def _encoded_key(key: Any) -> bytes:
    """A map key's deterministic encoding, which is its sort key (RFC 8949 §4.2.1)."""
    if type(key) in _CACHED_KEYS:
        return _encoded_scalar_key(key)
    return cbor2.dumps(_ordered(key))


_CACHED_KEYS: Final = frozenset({int, str, bytes, bool, type(None)})


@functools.lru_cache(maxsize=512, typed=True)
def _encoded_scalar_key(key: int | str | bytes | bool | None) -> bytes:  # noqa: FBT001 -- a key, not a flag
    """Cached: payloads reuse a few dozen keys (field numbers, header labels, license tags),
    and encoding each key on every message was most of the encoder's time. Scalars only:
    ``typed=True`` keeps ``True`` and ``1`` apart at the top but not inside a tuple, where
    ``(True,)`` and ``(1,)`` would share an entry and a map's key order be judged by what
    the process decoded before."""
    return cbor2.dumps(key)


def decode(data: bytes, *, max_bytes: int = MAX_MESSAGE_BYTES, max_depth: int = MAX_DEPTH) -> Any:
    """Decode one deterministically encoded CBOR item, or raise :class:`RemoteProtocolError`.

    Nothing but :class:`RemoteProtocolError` escapes, whatever ``data`` holds.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise RemoteProtocolError(ErrorCode.WRONG_TYPE, "CBOR input must be bytes")
    data = bytes(data)
    if len(data) > max_bytes:
        raise RemoteProtocolError(
            ErrorCode.OVERSIZE, f"message of {len(data)} bytes exceeds the {max_bytes}-byte limit"
        )
    if not data:
        raise RemoteProtocolError(ErrorCode.MALFORMED_CBOR, "empty input")
    if data[0] >> 5 != _MAJOR_TAG:
        return _decode_untagged(data, data, max_depth=max_depth)
    # Only the outermost item may be tagged, and which tag it may carry is the caller's call
    # (COSE_Sign1 is tag 18, RFC 9052 §4.2). The tag is read here rather than by cbor2, which
    # interprets the tags it knows (0 a date, 2 a bignum, 55799 nothing at all) and fails on,
    # or re-encodes differently, content that is well-formed CBOR all the same (RFC 8949 §3.4).
    tag, start = data[0] & 0x1F, 1  # a tag below 24 (18 among them) is its own head
    if tag >= 24:  # RFC 8949 §3.1: additional information 24 and up: the argument follows
        walker = _Walker(data, max_depth)
        _, _, tag = walker._head()  # noqa: SLF001 -- the walker's head reader, minimality included
        start = walker.pos
    if tag in _BIGNUM_TAGS:
        # An integer in the data model, not a tag for the caller: refused as one, at any size.
        raise RemoteProtocolError(ErrorCode.UNSUPPORTED_CBOR, _BIGNUMS_REFUSED)
    if start == len(data):
        raise RemoteProtocolError(ErrorCode.MALFORMED_CBOR, "truncated CBOR input")
    return cbor2.CBORTag(tag, _decode_untagged(data[start:], data, max_depth=max_depth - 1))


def _decode_untagged(data: bytes, whole: bytes, *, max_depth: int) -> Any:
    """Decode ``data``, an item that is not a tag (``whole``, what it was received in, is
    what a refusal is diagnosed on, so that its byte offsets are the sender's)."""
    try:
        value = cbor2.loads(data, max_depth=max_depth)
    except Exception:  # noqa: BLE001 -- the decoder's contract: any failure becomes ours
        # The walker says why, or that the depth is allowed after all: cbor2 counts a scalar
        # at the bottom as a level, the walker counts containers only, so a scalar inside
        # ``max_depth`` containers is one level more for cbor2. Asking cbor2 for one level
        # more up front would let ``max_depth + 1`` containers through, the last one empty.
        diagnose(whole, max_depth=_whole_depth(whole, data, max_depth))
        try:
            value = cbor2.loads(data, max_depth=max_depth + 1)
        except Exception as exc:  # noqa: BLE001 -- as above
            raise RemoteProtocolError(ErrorCode.MALFORMED_CBOR, f"malformed CBOR: {exc}") from None
    try:
        # cbor2 writes every head minimally and every length definitely, and keeps the decoded
        # order of map keys: equal bytes prove all of §4.2.1 but the key order, which
        # _check_plain verifies on the decoded value (cheaper than re-sorting every map).
        canonical = _dumps(value)
    except Exception:  # noqa: BLE001 -- a value cbor2 cannot re-encode is not deterministic CBOR
        canonical = b""
    if canonical != data:
        diagnose(whole, max_depth=_whole_depth(whole, data, max_depth))
        _check_plain(value)
        # Every rule of §4.2.1 holds, yet the value does not encode back to the same bytes:
        # two keys of a map decoded to one (1 and true, 0 and false are equal in Python).
        raise RemoteProtocolError(
            ErrorCode.UNSUPPORTED_CBOR,
            "map keys that decode to equal values (such as 1 and true) are not supported",
        )
    try:
        ordered = _check_plain(value)
    except RemoteProtocolError:
        # A value outside the data model may also be ill-formed bytes that cbor2 read and
        # wrote back alike (0xf8 0x18 to 0xf8 0x1f, RFC 8949 §3.3): the walker says first.
        diagnose(whole, max_depth=_whole_depth(whole, data, max_depth))
        raise
    if not ordered:
        diagnose(whole, max_depth=_whole_depth(whole, data, max_depth))
        raise RemoteProtocolError(
            ErrorCode.NOT_DETERMINISTIC, "map keys are not in bytewise order (RFC 8949 §4.2.1)"
        )
    return value


def _whole_depth(whole: bytes, data: bytes, max_depth: int) -> int:
    """The depth allowed in ``whole`` when ``data``, at its end, is allowed ``max_depth``."""
    return max_depth if whole is data else max_depth + 1


def _check_plain(value: Any) -> bool:  # noqa: C901, PLR0912 -- one branch per decoded type
    """Refuse what cbor2 decoded from a float, a tag below the top or an odd simple value;
    return whether every map's keys are in bytewise order of their encodings.

    Containers check their scalar items in line (most items are) and recurse only into
    containers and the odd value; this walk runs on every message received.
    """
    kind = type(value)
    if kind is int:
        if not _INT_MIN <= value <= _INT_MAX:
            raise RemoteProtocolError(ErrorCode.UNSUPPORTED_CBOR, _BIGNUMS_REFUSED)
        return True
    if kind in _PLAIN_SCALARS:
        return True
    if kind in (list, tuple):
        ordered = True
        for item in value:
            of = type(item)
            if of not in _PLAIN_SCALARS and (of is not int or not _INT_MIN <= item <= _INT_MAX):
                ordered = _check_plain(item) and ordered
        return ordered
    if kind in (dict, cbor2.FrozenDict):
        ordered = True
        previous = None
        for key, item in value.items():
            of = type(key)
            if of not in _PLAIN_SCALARS and (of is not int or not _INT_MIN <= key <= _INT_MAX):
                ordered = _check_plain(key) and ordered
            of = type(item)
            if of not in _PLAIN_SCALARS and (of is not int or not _INT_MIN <= item <= _INT_MAX):
                ordered = _check_plain(item) and ordered
            encoded = _encoded_key(key)
            if previous is not None and not previous < encoded:
                ordered = False
            previous = encoded
        return ordered
    if kind is float:
        raise RemoteProtocolError(
            ErrorCode.UNSUPPORTED_CBOR, "floating-point values are not allowed"
        )
    if kind is cbor2.CBORTag:
        raise RemoteProtocolError(
            ErrorCode.UNSUPPORTED_CBOR, f"CBOR tag {value.tag} is not allowed here"
        )
    raise RemoteProtocolError(
        ErrorCode.UNSUPPORTED_CBOR,
        f"CBOR tags and simple values that decode to {kind.__name__} are not allowed",
    )


def diagnose(data: bytes, *, max_depth: int = MAX_DEPTH) -> None:
    """Walk ``data`` and raise the :class:`RemoteProtocolError` naming the first rule it breaks.

    Returns normally when it finds nothing wrong; the caller then decides what to raise.
    """
    walker = _Walker(data, max_depth)
    walker.item(depth=0, top=True)
    if walker.pos != len(data):
        raise RemoteProtocolError(
            ErrorCode.MALFORMED_CBOR, f"{len(data) - walker.pos} trailing bytes after the CBOR item"
        )


class _Walker:
    """A byte-level CBOR reader that checks every §4.2.1 rule as it goes."""

    __slots__ = ("data", "max_depth", "pos")

    def __init__(self, data: bytes, max_depth: int) -> None:
        self.data = data
        self.pos = 0
        self.max_depth = max_depth

    def _take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise RemoteProtocolError(ErrorCode.MALFORMED_CBOR, "truncated CBOR input")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def _head(self) -> tuple[int, int, int]:
        """Read an initial byte and its argument; return (major, info, argument)."""
        start = self.pos
        initial = self._take(1)[0]
        major, info = initial >> 5, initial & 0x1F
        if info < 24:
            return major, info, info
        if info in (24, 25, 26, 27):
            size = 1 << (info - 24)
            argument = int.from_bytes(self._take(size), "big")
            if major == _MAJOR_SIMPLE:
                return major, info, argument
            smallest = 24 if size == 1 else 1 << (8 * (size // 2))
            if argument < smallest:
                raise RemoteProtocolError(
                    ErrorCode.NOT_DETERMINISTIC,
                    f"non-minimal integer or length encoding at byte {start} (RFC 8949 §4.2.1)",
                )
            return major, info, argument
        if info == _INDEFINITE:
            if major in (_MAJOR_UINT, _MAJOR_NINT, _MAJOR_TAG):
                raise RemoteProtocolError(
                    ErrorCode.MALFORMED_CBOR, f"invalid additional information at byte {start}"
                )
            if major == _MAJOR_SIMPLE:
                raise RemoteProtocolError(ErrorCode.MALFORMED_CBOR, f"unexpected break at {start}")
            raise RemoteProtocolError(
                ErrorCode.INDEFINITE_LENGTH,
                f"indefinite-length item at byte {start} (RFC 8949 §4.2.1 forbids them)",
            )
        raise RemoteProtocolError(
            ErrorCode.MALFORMED_CBOR, f"reserved additional information at byte {start}"
        )

    def item(self, *, depth: int, top: bool = False) -> None:  # noqa: C901 -- one branch per CBOR major type
        start = self.pos
        major, info, argument = self._head()
        if major in (_MAJOR_UINT, _MAJOR_NINT):
            return
        if major == _MAJOR_BSTR:
            self._take(argument)
            return
        if major == _MAJOR_TSTR:
            try:
                self._take(argument).decode("utf-8")
            except UnicodeDecodeError:
                raise RemoteProtocolError(
                    ErrorCode.MALFORMED_CBOR, f"text string at byte {start} is not UTF-8"
                ) from None
            return
        if major in (_MAJOR_ARRAY, _MAJOR_MAP):
            if depth + 1 > self.max_depth:
                raise RemoteProtocolError(
                    ErrorCode.TOO_DEEP, f"nesting deeper than {self.max_depth} levels"
                )
            if major == _MAJOR_ARRAY:
                for _ in range(argument):
                    self.item(depth=depth + 1)
                return
            self._map_entries(argument, depth=depth + 1)
            return
        if major == _MAJOR_TAG:
            # Only the outermost item may be tagged; which tag it may carry is the caller's call.
            if not top:
                raise RemoteProtocolError(
                    ErrorCode.UNSUPPORTED_CBOR, f"CBOR tag {argument} is not allowed here"
                )
            self.item(depth=depth + 1)
            return
        self._simple(info, argument, start)

    @staticmethod
    def _simple(info: int, argument: int, start: int) -> None:
        """Check a major type 7 item (a float or a simple value) whose head is at ``start``."""
        if info in (25, 26, 27):
            raise RemoteProtocolError(
                ErrorCode.UNSUPPORTED_CBOR, f"floating-point value at byte {start} is not allowed"
            )
        if info == 24 and argument < 0x20:
            # RFC 8949 §3.3: simple values below 32 have only the one-byte form; 0xf8 followed
            # by a byte below 0x20 is not well-formed, not merely a value smartlic refuses.
            raise RemoteProtocolError(
                ErrorCode.MALFORMED_CBOR,
                f"two-byte simple value {argument} at byte {start} is not well-formed",
            )
        if argument not in _ALLOWED_SIMPLE or info == 24:
            raise RemoteProtocolError(
                ErrorCode.UNSUPPORTED_CBOR, f"simple value {argument} at byte {start} not allowed"
            )

    def _map_entries(self, count: int, *, depth: int) -> None:
        seen: set[bytes] = set()
        previous = b""
        for index in range(count):
            key_start = self.pos
            self.item(depth=depth)
            key = self.data[key_start : self.pos]
            if key in seen:
                raise RemoteProtocolError(
                    ErrorCode.DUPLICATE_KEY, f"duplicate map key at byte {key_start}"
                )
            if index and key < previous:
                raise RemoteProtocolError(
                    ErrorCode.NOT_DETERMINISTIC,
                    f"map keys not in bytewise order at byte {key_start} (RFC 8949 §4.2.1)",
                )
            seen.add(key)
            previous = key
            self.item(depth=depth)


def as_map(value: Any, what: str) -> Mapping[Any, Any]:
    """``value`` if it is a CBOR map, else a WRONG_TYPE error naming ``what``."""
    if not isinstance(value, dict):
        raise RemoteProtocolError(ErrorCode.WRONG_TYPE, f"{what} must be a CBOR map")
    return value
