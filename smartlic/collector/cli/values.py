"""How values are written on the command line, and shown back.

Dates are ISO 8601 (``2026-01-01`` is midnight UTC; ``2026-01-01T12:00:00Z`` a moment), shown
as ``2026-01-01T00:00:00Z``. Durations are a number and a unit: ``90s``, ``15m``, ``12h``,
``30d``, ``2w``. An order line is ``TAG=COUNT`` (perpetual) or ``TAG=COUNT@START..END`` (term:
active from START up to, not including, END).
"""

from __future__ import annotations

import argparse
import re
from datetime import UTC, date, datetime
from typing import Final

from smartlic.collector.orders import OrderLine
from smartlic.protocol.fields import TIME_MAX

_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}
_DURATION_RE: Final = re.compile(r"(\d{1,9})([smhdw])")
_LINE_RE: Final = re.compile(r"([^=@\s]+)=(\d{1,12})(?:@(\S+)\.\.(\S+))?")


def parse_time(text: str) -> int:
    """Seconds since the epoch from a date, an ISO 8601 time, or a plain number of seconds,
    within the protocol's times (1970 to 2**40 s, about the year 36812)."""
    seconds = _seconds(text.strip())
    if not 0 <= seconds <= TIME_MAX:
        raise argparse.ArgumentTypeError(f"{text!r} is before 1970 or too far ahead")
    return seconds


def _seconds(text: str) -> int:
    if text.isascii() and text.isdigit():
        return int(text)
    try:
        if len(text) == len("2026-01-01"):
            day = date.fromisoformat(text)
            return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a date (YYYY-MM-DD) or an ISO 8601 time"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


def format_time(seconds: int | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_day(seconds: int) -> str:
    """A date alone when the time is midnight UTC (how order terms are usually written)."""
    text = format_time(seconds) or ""
    return text[:10] if text.endswith("T00:00:00Z") else text


def parse_duration(text: str) -> int:
    match = _DURATION_RE.fullmatch(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration like 90s, 15m, 12h, 30d or 2w"
        )
    return int(match[1]) * _UNITS[match[2]]


def format_duration(seconds: int) -> str:
    for unit in ("w", "d", "h", "m"):
        if seconds % _UNITS[unit] == 0:
            return f"{seconds // _UNITS[unit]}{unit}"
    return f"{seconds}s"


def parse_order_line(text: str) -> OrderLine:
    match = _LINE_RE.fullmatch(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an order line: TAG=COUNT or TAG=COUNT@START..END"
        )
    tag, quantity, start, end = match.groups()
    if start is None:
        return OrderLine(tag=tag, quantity=int(quantity))
    return OrderLine(
        tag=tag, quantity=int(quantity), starts_at=parse_time(start), ends_at=parse_time(end)
    )


def format_order_line(line: OrderLine) -> str:
    text = f"{line.tag}={line.quantity}"
    if line.starts_at is not None and line.ends_at is not None:
        text += f"@{format_day(line.starts_at)}..{format_day(line.ends_at)}"
    return text


def format_term(starts_at: int | None, ends_at: int | None) -> str:
    if starts_at is None or ends_at is None:
        return "perpetual"
    return f"{format_day(starts_at)}..{format_day(ends_at)}"
