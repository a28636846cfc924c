"""Usage counts as the device states them: a TOML ``[usage]`` table, or ``tag=count`` lines.

Pure parsing; reading the file or running the command is the daemon's job
(:mod:`smartlic.agent.sources`). Each parser returns a complete ``{tag: count}`` mapping or
raises :class:`UsageError` naming the line or key at fault: a half-understood usage source must
never be reported as if it were the device's usage.
"""

from __future__ import annotations

import tomllib
from typing import TYPE_CHECKING, Final

from smartlic.agent.errors import AgentError
from smartlic.protocol import ProtocolError
from smartlic.protocol.fields import COUNT_MAX, MAX_TAGS, license_tag

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

_COUNT_DIGITS: Final = len(str(COUNT_MAX))


class UsageError(AgentError):
    """The usage source says something that is not a set of license counts."""


def _count(where: str, value: object) -> int:
    if type(value) is not int or not 0 <= value <= COUNT_MAX:
        raise UsageError(f"{where}: a count is a whole number 0..{COUNT_MAX}, not {value!r}")
    return value


def _tag(where: str, tag: object) -> str:
    try:
        return license_tag(tag)
    except ProtocolError as exc:
        raise UsageError(f"{where}: {exc.message}") from None


def _checked(pairs: Iterable[tuple[str, object, object]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for where, tag, value in pairs:
        name = _tag(where, tag)
        if name in counts:
            raise UsageError(f"{where}: {name} is given twice")
        counts[name] = _count(where, value)
    if len(counts) > MAX_TAGS:
        raise UsageError(f"{len(counts)} license tags; a report carries at most {MAX_TAGS}")
    return counts


def parse_usage_toml(text: str) -> dict[str, int]:
    """Counts from a TOML document's ``[usage]`` table (other tables are the device's own)."""
    try:
        document = tomllib.loads(text)
    # tomllib lets two more through as they are: ValueError for an integer past CPython's
    # 4300-digit limit, RecursionError for arrays nested a few thousand deep.
    except (tomllib.TOMLDecodeError, ValueError, RecursionError) as exc:
        raise UsageError(f"not valid TOML: {exc}") from None
    table = document.get("usage", {})
    if not isinstance(table, dict):
        raise UsageError("'usage' must be a table of tag = count")
    return _checked((f"usage.{tag}", tag, value) for tag, value in table.items())


def parse_usage_lines(text: str) -> dict[str, int]:
    """Counts from ``tag=count`` lines (a usage command's stdout); blank and ``#`` lines skipped."""

    def pairs() -> Iterable[tuple[str, str, object]]:
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            tag, sep, count = line.partition("=")
            where = f"line {number}"
            if not sep:
                raise UsageError(f"{where}: expected tag=count, got {line[:60]!r}")
            digits = count.strip()
            if not digits.isascii() or not digits.isdigit():
                raise UsageError(f"{where}: count {digits[:20]!r} is not a whole number")
            # Refused before int(), which raises a plain ValueError past 4300 digits (and
            # counts leading zeros among them).
            significant = digits.lstrip("0")
            if len(significant) > _COUNT_DIGITS:
                raise UsageError(
                    f"{where}: a count is a whole number 0..{COUNT_MAX}, not {digits[:20]}..."
                )
            yield where, tag.strip(), int(significant or "0")

    return _checked(pairs())


def check_counts(counts: Mapping[str, int]) -> dict[str, int]:
    """``counts`` as a plain dict, if every tag and count is one a report can carry."""
    return _checked((f"count of {tag!r}", tag, value) for tag, value in counts.items())


def same_usage(a: Mapping[str, int], b: Mapping[str, int]) -> bool:
    """Equal as usage: a tag at 0 is the same as a tag not mentioned."""
    return {t: n for t, n in a.items() if n} == {t: n for t, n in b.items() if n}
