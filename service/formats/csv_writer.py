"""CSV as RFC 4180 (CRLF, quotes doubled), UTF-8 with an optional BOM, formula guard."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from datetime import date, datetime
from pathlib import Path

from service.formats import Batches, Cell, json_text

__all__ = ["FORMULA_TRIGGERS", "CrlfRecords", "count_rows", "header_line", "write_csv"]

# Excel, LibreOffice and Sheets run a cell starting with one of these as a formula
# (OWASP "CSV injection"); a leading ' makes them show it as text instead.
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
BUFFER = 1024 * 1024


def _other(value: Cell) -> str:
    """Cells that are neither text, numbers nor empty."""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, datetime | date):
        return value.isoformat()
    return json_text(value)


def _row(row: Sequence[Cell], guard: bool) -> list[Cell]:
    # One comprehension per row, no call per cell: this loop is most of the export's time.
    # Numbers are data, not formulas (-5 stays -5); None is written as an empty field.
    return [
        ("'" + v if guard and v.startswith(FORMULA_TRIGGERS) else v)
        if type(v) is str
        else v
        if v is None or type(v) is int or type(v) is float
        else _other(v)
        for v in row
    ]


def write_csv(
    path: Path,
    header: Sequence[str],
    batches: Batches,
    *,
    bom: bool = False,
    formula_guard: bool = True,
) -> int:
    """Write the header and every row; return the number of data rows written.

    Nested values must arrive as JSON text; datetimes are written as ISO 8601 with their offset.
    """
    written = 0
    with path.open("w", encoding="utf-8-sig" if bom else "utf-8", newline="", buffering=BUFFER) as fh:
        writer = csv.writer(fh, dialect="excel", lineterminator="\r\n")
        writer.writerow(_row(header, formula_guard))
        for batch in batches:
            writer.writerows([_row(row, formula_guard) for row in batch])
            written += len(batch)
    return written


def header_line(header: Sequence[str], *, bom: bool = False, formula_guard: bool = True) -> bytes:
    """The header record as write_csv writes it, for files whose rows come from elsewhere."""
    out = io.StringIO(newline="")
    csv.writer(out, dialect="excel", lineterminator="\r\n").writerow(_row(header, formula_guard))
    return ("\ufeff" if bom else "").encode() + out.getvalue().encode()


class CrlfRecords:
    """PostgreSQL's CSV (a LF after each record) to RFC 4180's (CRLF), chunk by chunk.

    A LF inside a quoted field stays as it is. A LF ends a record only outside quotes, that is
    when the quote characters so far are even in number (an escaped "" counts twice).
    """

    def __init__(self) -> None:
        self.quoted = False  # inside a quoted field at the end of the last chunk
        self.records = 0  # record ends seen so far

    def __call__(self, chunk: bytes) -> bytes:
        if not self.quoted and b'"' not in chunk:  # the common case, all in C
            self.records += chunk.count(b"\n")
            return chunk.replace(b"\n", b"\r\n")
        pieces = chunk.split(b"\n")
        out = []
        quoted = self.quoted
        for piece in pieces[:-1]:
            if piece.count(b'"') % 2:
                quoted = not quoted
            out.append(piece)
            if quoted:
                out.append(b"\n")
            else:
                out.append(b"\r\n")
                self.records += 1
        last = pieces[-1]
        if last.count(b'"') % 2:
            quoted = not quoted
        out.append(last)
        self.quoted = quoted
        return b"".join(out)


def count_rows(path: Path) -> int:
    """Data rows in a CSV file whose records all end in a line break (as ours do), read back
    quote-aware: a line break inside a quoted field is not a record end. Several times
    faster than parsing every field with the csv module, which the tests do instead."""
    ends = CrlfRecords()  # counts record ends as it rewrites; the rewrite is thrown away
    with path.open("rb") as fh:
        while chunk := fh.read(BUFFER):
            ends(chunk)
    return ends.records - 1
