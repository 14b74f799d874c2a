"""XLSX with xlsxwriter in constant-memory mode: each row is flushed to disk once the next
one starts, so memory does not grow with the row count. Past a sheet's row limit the rows
continue on a new sheet with the same header."""

from __future__ import annotations

import math
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from itertools import chain, islice
from pathlib import Path
from typing import Any

import xlsxwriter
from xlsxwriter.worksheet import Worksheet

from service.formats import Batches, Cell, Row, display

__all__ = ["MAX_DATA_ROWS", "XlsxResult", "check_xlsx", "write_xlsx"]

# Excel's grid has 1,048,576 rows; the header takes one on every sheet.
MAX_DATA_ROWS = 1_048_575
SAMPLE_ROWS = 200  # rows looked at to fit the column widths
MIN_WIDTH, MAX_WIDTH = 8, 60
# Excel keeps 15 significant digits: larger integers go in as text so no digit is lost.
MAX_EXACT_INT = 2**53
DATETIME_FORMAT = "yyyy-mm-dd hh:mm:ss"
DATE_FORMAT = "yyyy-mm-dd"


@dataclass(frozen=True)
class XlsxResult:
    rows: int
    sheets: int


def _width(value: Cell) -> int:
    if isinstance(value, datetime):
        return len(DATETIME_FORMAT)
    text = display(value)
    # The longest line of a multi-line cell, wide characters counted once: a fair estimate.
    return max((len(line) for line in text.splitlines()), default=0)


def _widths(header: Sequence[str], sample: Sequence[Row]) -> list[int]:
    widths = [_width(h) + 2 for h in header]
    for row in sample:
        for i, value in enumerate(row):
            widths[i] = max(widths[i], _width(value) + 1)
    return [min(max(w, MIN_WIDTH), MAX_WIDTH) for w in widths]


class _Sheets:
    """Creates sheets as rows spill over, each with the styled, frozen header."""

    def __init__(
        self, book: xlsxwriter.Workbook, header: Sequence[str], widths: list[int], name: str
    ) -> None:
        self.book, self.header, self.widths, self.name = book, header, widths, name
        self.header_format = book.add_format(
            {"bold": True, "font_color": "#FFFFFF", "bg_color": "#1F4E78", "border": 1, "valign": "top"}
        )
        self.count = 0
        self.sheet: Worksheet | None = None
        self.rows_on_sheet = 0

    def new(self) -> Worksheet:
        self.finish()
        self.count += 1
        sheet = self.book.add_worksheet(self.name if self.count == 1 else f"{self.name} ({self.count})")
        for col, width in enumerate(self.widths):
            sheet.set_column(col, col, width)
        for col, label in enumerate(self.header):
            sheet.write_string(0, col, label, self.header_format)
        sheet.freeze_panes(1, 0)
        self.sheet, self.rows_on_sheet = sheet, 0
        return sheet

    def finish(self) -> None:
        if self.sheet is not None and self.header:
            self.sheet.autofilter(0, 0, max(self.rows_on_sheet, 1), len(self.header) - 1)


def write_xlsx(
    path: Path,
    header: Sequence[str],
    batches: Batches,
    *,
    rows_per_sheet: int = MAX_DATA_ROWS,
    sheet_name: str = "Records",
    tmpdir: Path | None = None,
) -> XlsxResult:
    """Write the rows under a header; strings are always strings, never formulas or links.

    Numbers, booleans, dates and datetimes are native cells; aware datetimes are written as
    their wall-clock time (callers convert them to the zone wanted first).
    """
    if not 1 <= rows_per_sheet <= MAX_DATA_ROWS:
        raise ValueError(f"rows_per_sheet must be within 1..{MAX_DATA_ROWS}")
    rows = chain.from_iterable(batches)
    sample = list(islice(rows, SAMPLE_ROWS))
    options: dict[str, Any] = {
        "constant_memory": True,
        "strings_to_formulas": False,
        "strings_to_urls": False,
        "strings_to_numbers": False,
    }
    if tmpdir is not None:
        options["tmpdir"] = str(tmpdir)
    book = xlsxwriter.Workbook(str(path), options)
    sheets = _Sheets(book, header, _widths(header, sample), sheet_name)
    formats = {
        "datetime": book.add_format({"num_format": DATETIME_FORMAT}),
        "date": book.add_format({"num_format": DATE_FORMAT}),
    }
    written = _write_rows(sheets, chain(sample, rows), rows_per_sheet, formats)
    sheets.finish()
    book.close()
    return XlsxResult(written, sheets.count)


def _write_rows(sheets: _Sheets, rows: Iterable[Row], per_sheet: int, formats: dict[str, Any]) -> int:
    sheet = sheets.new()
    written = 0
    dt_format, date_format = formats["datetime"], formats["date"]
    for row in rows:
        if sheets.rows_on_sheet == per_sheet:
            sheet = sheets.new()
        r = sheets.rows_on_sheet + 1
        for c, value in enumerate(row):
            # isinstance order matters: bool is an int, datetime is a date.
            if isinstance(value, str):
                sheet.write_string(r, c, value)
            elif value is None:
                continue
            elif isinstance(value, bool):
                sheet.write_boolean(r, c, value)
            elif isinstance(value, int | float) and _exact(value):
                sheet.write_number(r, c, value)
            elif isinstance(value, datetime):
                sheet.write_datetime(r, c, value.replace(tzinfo=None), dt_format)
            elif isinstance(value, date):
                sheet.write_datetime(r, c, value, date_format)
            else:
                sheet.write_string(r, c, display(value))
        sheets.rows_on_sheet += 1
        written += 1
    return written


def _exact(value: float) -> bool:
    """Whether Excel keeps the number as it is (finite, integers within 2**53)."""
    return math.isfinite(value) and (not isinstance(value, int) or abs(value) < MAX_EXACT_INT)


def check_xlsx(path: Path) -> int:
    """Read the archive back (every member's CRC) and return its number of sheets."""
    with zipfile.ZipFile(path) as archive:
        bad = archive.testzip()
        if bad is not None:
            raise ValueError(f"corrupt member {bad} in {path.name}")
        return sum(1 for n in archive.namelist() if n.startswith("xl/worksheets/sheet"))
