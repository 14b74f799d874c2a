"""The XLSX writer read back with openpyxl: native types, header, widths, sheet spill."""

from __future__ import annotations

import inspect
import json
import zipfile
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import openpyxl
import pytest

from service.formats import Cell
from service.formats.xlsx_writer import MAX_DATA_ROWS, check_xlsx, write_xlsx

TOKYO = timezone(timedelta(hours=9))
HEADER = ["id", "name", "amount", "flag", "when", "day", "nested", "empty"]
ROWS: list[list[Cell]] = [
    [
        1,
        "Zoë Müller 名前 😀",
        3.25,
        True,
        datetime(2026, 3, 1, 21, 0, 5, tzinfo=TOKYO),
        date(1999, 12, 31),
        ["a", 1],
        None,
    ],
    [
        2,
        '=HYPERLINK("http://evil","click")',
        -7,
        False,
        datetime(2026, 3, 1, 9, 0),
        date(2000, 1, 1),
        {"k": "ü"},
        "",
    ],
    [3, "line\nbreak " + "x" * 5000, 2**60, None, None, None, None, "@SUM(A1:A9)"],
]


def values(path: Path, sheet: str = "Records") -> list[tuple[object, ...]]:
    return list(openpyxl.load_workbook(path)[sheet].iter_rows(values_only=True))


def test_native_types_read_back(tmp_path: Path) -> None:
    path = tmp_path / "out.xlsx"
    result = write_xlsx(path, HEADER, [ROWS[:1], ROWS[1:]])
    assert (result.rows, result.sheets) == (3, 1)
    got = values(path)
    assert got[0] == tuple(HEADER)
    first = got[1]
    assert first[:4] == (1, "Zoë Müller 名前 😀", 3.25, True)
    assert first[4] == datetime(2026, 3, 1, 21, 0, 5)  # the wall-clock time in its own zone
    assert first[5] == datetime(1999, 12, 31)
    assert json.loads(str(first[6])) == ["a", 1]
    assert first[7] is None
    assert got[2][2:4] == (-7, False)
    assert got[3][1] == "line\nbreak " + "x" * 5000
    assert got[3][2] == str(2**60)  # beyond Excel's 15 digits: text, every digit kept


def test_formula_looking_text_stays_text(tmp_path: Path) -> None:
    path = tmp_path / "out.xlsx"
    write_xlsx(path, ["=cmd|' /C calc'!A0", *HEADER[1:]], [ROWS])
    sheet = openpyxl.load_workbook(path)["Records"]
    for cell in (sheet["A1"], sheet["B3"], sheet["H4"]):
        assert cell.data_type == "s" and str(cell.value)[:1] in "=@"
    with zipfile.ZipFile(path) as archive:
        assert b"<f>" not in archive.read("xl/worksheets/sheet1.xml")


def test_header_styled_frozen_filtered_and_widths_fitted(tmp_path: Path) -> None:
    path = tmp_path / "out.xlsx"
    write_xlsx(path, ["a", "a long header label", "c"], [[[1, "short", "a much longer cell value here"]]])
    sheet = openpyxl.load_workbook(path)["Records"]
    assert sheet.freeze_panes == "A2"
    assert all(cell.font.bold for cell in sheet[1])
    assert sheet["A1"].fill.fgColor.rgb.endswith("1F4E78")
    assert sheet.auto_filter.ref == "A1:C2"
    widths = [sheet.column_dimensions[c].width for c in "ABC"]
    assert widths[0] < widths[1] and widths[0] < widths[2]
    assert widths[2] >= len("a much longer cell value here")


def test_rows_spill_onto_new_sheets_with_the_header(tmp_path: Path) -> None:
    path = tmp_path / "out.xlsx"
    rows: list[list[Cell]] = [[i, f"row {i}"] for i in range(7)]
    result = write_xlsx(path, ["n", "s"], [rows[:4], rows[4:]], rows_per_sheet=3)
    assert (result.rows, result.sheets) == (7, 3)
    book = openpyxl.load_workbook(path)
    assert book.sheetnames == ["Records", "Records (2)", "Records (3)"]
    seen = []
    for sheet in book:
        got = list(sheet.iter_rows(values_only=True))
        assert got[0] == ("n", "s")
        assert len(got) - 1 <= 3
        assert sheet.freeze_panes == "A2"
        seen += [row[0] for row in got[1:]]
    assert seen == list(range(7))
    assert check_xlsx(path) == 3


def test_exactly_full_sheets_leave_no_empty_sheet(tmp_path: Path) -> None:
    result = write_xlsx(tmp_path / "out.xlsx", ["n"], [[[i] for i in range(6)]], rows_per_sheet=3)
    assert result.sheets == 2


def test_default_sheet_limit_is_excels_grid_minus_the_header() -> None:
    assert MAX_DATA_ROWS == 1_048_575 == 2**20 - 1
    assert inspect.signature(write_xlsx).parameters["rows_per_sheet"].default == MAX_DATA_ROWS
    with pytest.raises(ValueError):
        write_xlsx(Path("unused.xlsx"), ["n"], [], rows_per_sheet=MAX_DATA_ROWS + 1)


def test_control_characters_do_not_break_the_file(tmp_path: Path) -> None:
    path = tmp_path / "out.xlsx"
    hostile = "nul\x00 esc\x1b bell\x07 </c><f>1+1</f> & <b>"
    write_xlsx(path, ["h"], [[[hostile]]])
    got = values(path)[1][0]
    assert isinstance(got, str) and "</c><f>1+1</f> & <b>" in got


def test_empty_export_has_the_header(tmp_path: Path) -> None:
    path = tmp_path / "out.xlsx"
    assert write_xlsx(path, ["a", "b"], []).rows == 0
    assert values(path) == [("a", "b")]


def test_check_refuses_a_truncated_file(tmp_path: Path) -> None:
    path = tmp_path / "out.xlsx"
    write_xlsx(path, ["a"], [[[1]]])
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises((zipfile.BadZipFile, ValueError)):
        check_xlsx(path)
