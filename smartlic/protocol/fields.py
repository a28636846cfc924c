"""Field rules shared by every message: what a valid value of each kind is.

Each checker returns the value (normalised where that is harmless, e.g. a mapping frozen) or
raises :class:`LocalProtocolError`; decoders turn that into :class:`RemoteProtocolError`.
Type checks use ``type(x) is int`` on purpose: ``True`` is an ``int`` in Python, not on the wire.
"""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING, Final, NoReturn, TypeVar

import cbor2

from smartlic.protocol.errors import ErrorCode, LocalProtocolError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

_K = TypeVar("_K")
_V = TypeVar("_V")

UINT64_MAX: Final = 2**64 - 1
SEQ_MAX: Final = 2**63 - 1
TIME_MAX: Final = 2**40
"""Latest accepted time in seconds since the epoch (year 36812); keeps times in 5-6 bytes."""
COUNT_MAX: Final = 2**32 - 1
PERIOD_MAX: Final = 10 * 366 * 86400
MAX_TAGS: Final = 64
MAX_TEXT: Final = 512
MAX_NAME: Final = 128
ID_MIN_BYTES: Final = 8
ID_MAX_BYTES: Final = 32

LICENSE_TAG_RE: Final = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
"""License tags: lowercase, like ``network-advantage`` or ``throughput-1g``."""


def fail(code: ErrorCode, message: str) -> LocalProtocolError:
    return LocalProtocolError(code, message)


def uint(name: str, value: object, *, low: int = 0, high: int = UINT64_MAX) -> int:
    if type(value) is not int:
        raise fail(ErrorCode.WRONG_TYPE, f"{name} must be an integer, not {type(value).__name__}")
    if not low <= value <= high:
        raise fail(ErrorCode.OUT_OF_RANGE, f"{name} {value} is outside {low}..{high}")
    return value


def text(name: str, value: object, *, high: int = MAX_TEXT, low: int = 0) -> str:
    if type(value) is not str:
        raise fail(ErrorCode.WRONG_TYPE, f"{name} must be text, not {type(value).__name__}")
    if not low <= len(value) <= high:
        raise fail(ErrorCode.OUT_OF_RANGE, f"{name} must be {low}..{high} characters")
    if not value.isprintable():
        raise fail(ErrorCode.INVALID_VALUE, f"{name} must be printable text")
    return value


def bstr(name: str, value: object, *, low: int = 0, high: int = 4096) -> bytes:
    if type(value) is not bytes:
        raise fail(
            ErrorCode.WRONG_TYPE, f"{name} must be a byte string, not {type(value).__name__}"
        )
    if not low <= len(value) <= high:
        raise fail(ErrorCode.OUT_OF_RANGE, f"{name} must be {low}..{high} bytes, not {len(value)}")
    return value


def identifier(name: str, value: object) -> bytes:
    """A random request id or nonce: 8 to 32 bytes."""
    return bstr(name, value, low=ID_MIN_BYTES, high=ID_MAX_BYTES)


def timestamp(name: str, value: object) -> int:
    return uint(name, value, high=TIME_MAX)


def _well_formed_tag(value: str) -> bool:
    # Too long to be one, refused before the cache, which remote input must not fill with
    # strings of any length.
    return len(value) <= _TAG_MAX and _cached_tag_check(value)


_TAG_MAX: Final = 64


@functools.lru_cache(maxsize=4096)
def _cached_tag_check(value: str) -> bool:
    # Cached: a deployment has a few dozen tags, read and written in every report and notice
    # (a check took 0.60 µs with the match each time, 0.24 with the lookup; measured).
    return LICENSE_TAG_RE.fullmatch(value) is not None


def license_tag(value: object) -> str:
    if type(value) is not str:
        raise fail(ErrorCode.WRONG_TYPE, f"license tag must be text, not {type(value).__name__}")
    if not _well_formed_tag(value):
        raise fail(
            ErrorCode.INVALID_VALUE,
            f"license tag {value!r} must be 1-64 of a-z 0-9 . _ - starting with a letter or digit",
        )
    return value


class FrozenMap(dict[_K, _V]):
    """A read-only, hashable dict: the maps inside messages (tags, counts).

    Not ``cbor2.FrozenDict``: that is a ``collections.abc.Mapping`` written in Python, whose
    ``items()`` cost 1.4 µs against a dict's 0.2 and ``get`` 0.6 µs against 0.08, and the
    collector reads a message's maps several times per report. Being a dict, it encodes to
    CBOR and JSON as a map and equals the plain dict it was made from.
    """

    __slots__ = ()

    def __hash__(self) -> int:  # type: ignore[override]  # dict sets __hash__ = None; this one is frozen
        return hash(frozenset(self.items()))

    def __reduce__(self) -> tuple[type[FrozenMap[_K, _V]], tuple[dict[_K, _V]]]:
        # pickle and copy would otherwise refill the copy through the refused __setitem__.
        return (type(self), (dict(self),))

    def _read_only(self, *_: object, **__: object) -> NoReturn:
        raise TypeError(f"a message's {type(self).__name__} cannot be changed")

    __setitem__ = __delitem__ = _read_only
    clear = pop = popitem = setdefault = update = __ior__ = _read_only


def tag_map(
    name: str, value: object, check: Callable[[str, object], object]
) -> Mapping[str, object]:
    """A map of license tag to ``check(tag, item)``, frozen; at most :data:`MAX_TAGS` entries."""
    # isinstance of the ABC-derived FrozenDict costs 0.3 µs; dicts (most maps) skip it.
    if not (isinstance(value, dict) or isinstance(value, cbor2.FrozenDict)):  # noqa: SIM101 -- the order is the point
        raise fail(ErrorCode.WRONG_TYPE, f"{name} must be a map of license tag to value")
    if len(value) > MAX_TAGS:
        raise fail(ErrorCode.OUT_OF_RANGE, f"{name} has {len(value)} tags; at most {MAX_TAGS}")
    return FrozenMap({license_tag(tag): check(tag, item) for tag, item in value.items()})


def name(field: str, value: object) -> str:
    """An account or virtual-account name as shown to people."""
    return text(field, value, low=1, high=MAX_NAME)
