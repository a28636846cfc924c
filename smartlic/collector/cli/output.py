"""What commands print: listings (rows) and reports (one result), as table, JSON or CSV.

Tables are aligned with numbers to the right; JSON is one document (an array for a listing, an
object for a report); CSV has a header row. Lists inside a value (an order's lines) are joined
with "; " in tables and CSV and stay lists in JSON.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, TypeAlias

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

Value: TypeAlias = "str | int | bool | list[str] | None"
Format: TypeAlias = Literal["table", "json", "csv"]
FORMATS: tuple[Format, ...] = ("table", "json", "csv")


@dataclass(frozen=True, slots=True)
class Listing:
    columns: Sequence[str]
    rows: Sequence[Mapping[str, Value]]


@dataclass(frozen=True, slots=True)
class Report:
    """One result: a sentence for people, and the same facts as data for machines."""

    text: str
    data: Mapping[str, Value] = field(default_factory=dict)


def _text(value: Value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return "; ".join(value)
    return str(value)


def render(output: Listing | Report, fmt: Format) -> str:
    """The text to print, ending in a newline."""
    if fmt == "json":
        document: object = (
            [dict(row) for row in output.rows] if isinstance(output, Listing) else dict(output.data)
        )
        return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    if isinstance(output, Report):
        if fmt == "csv":
            output = Listing(list(output.data), [output.data])
        else:
            return output.text + "\n"
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(output.columns)
        writer.writerows([_text(row.get(c)) for c in output.columns] for row in output.rows)
        return buffer.getvalue()
    return _table(output)


def _table(listing: Listing) -> str:
    cells = [[_text(row.get(c)) for c in listing.columns] for row in listing.rows]
    widths = [
        max([len(name), *(len(line[i]) for line in cells)])
        for i, name in enumerate(listing.columns)
    ]
    numeric = [
        bool(listing.rows)
        and all(
            isinstance(row.get(c), int) and not isinstance(row.get(c), bool) for row in listing.rows
        )
        for c in listing.columns
    ]

    def line(values: Sequence[str]) -> str:
        padded = [
            value.rjust(width) if right else value.ljust(width)
            for value, width, right in zip(values, widths, numeric, strict=True)
        ]
        return "  ".join(padded).rstrip()

    header = [name.upper() for name in listing.columns]
    return "\n".join([line(header), *(line(row) for row in cells)]) + "\n"
