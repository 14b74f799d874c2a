"""The CSV writer read back with the csv module, and the pipe that feeds writers a thread."""

from __future__ import annotations

import asyncio
import csv
import json
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import pytest

from service.formats import Cell, write_in_thread
from service.formats.csv_writer import FORMULA_TRIGGERS, CrlfRecords, count_rows, header_line, write_csv

TOKYO = timezone(timedelta(hours=9))
ROWS: list[list[Cell]] = [
    [
        1,
        "Zoë Müller",
        "Ελληνικά русский 名前 😀",
        None,
        3.25,
        True,
        datetime(2026, 3, 1, 21, 0, tzinfo=TOKYO),
    ],
    [2, 'quote " comma , semi ;', "line\nbreak and\r\ncrlf", "", -7, False, date(1999, 12, 31)],
    [3, "x" * 100_000, ["a", {"b": None}], {"k": "ü"}, 12345678901234567890, None, None],
]
HEADER = ["id", "name", "text", "empty", "number", "flag", "when"]


def read(path: Path, encoding: str = "utf-8") -> list[list[str]]:
    with path.open(encoding=encoding, newline="") as fh:
        return list(csv.reader(fh))


def test_rows_read_back_as_written(tmp_path: Path) -> None:
    path = tmp_path / "out.csv"
    assert write_csv(path, HEADER, [ROWS[:2], ROWS[2:]]) == 3
    got = read(path)
    assert got[0] == HEADER
    assert got[1] == [
        "1",
        "Zoë Müller",
        "Ελληνικά русский 名前 😀",
        "",
        "3.25",
        "true",
        "2026-03-01T21:00:00+09:00",
    ]
    assert got[2] == [
        "2",
        'quote " comma , semi ;',
        "line\nbreak and\r\ncrlf",
        "",
        "-7",
        "false",
        "1999-12-31",
    ]
    assert got[3][1] == "x" * 100_000
    assert json.loads(got[3][2]) == ["a", {"b": None}] and json.loads(got[3][3]) == {"k": "ü"}
    assert got[3][4] == "12345678901234567890"
    assert got[3][5:] == ["", ""]


def test_rfc4180_crlf_quotes_and_utf8_without_bom(tmp_path: Path) -> None:
    path = tmp_path / "out.csv"
    write_csv(path, ["a", "b"], [[['say "hi"', "x,y"]]])
    raw = path.read_bytes()
    assert raw == b'a,b\r\n"say ""hi""","x,y"\r\n'


def test_bom_on_request(tmp_path: Path) -> None:
    path = tmp_path / "out.csv"
    write_csv(path, ["ä"], [[["é"]]], bom=True)
    assert path.read_bytes().startswith(b"\xef\xbb\xbf\xc3\xa4")
    assert read(path, "utf-8-sig") == [["ä"], ["é"]]


@pytest.mark.parametrize("trigger", FORMULA_TRIGGERS)
def test_formula_guard_neutralises_each_trigger(tmp_path: Path, trigger: str) -> None:
    path = tmp_path / "out.csv"
    value = f'{trigger}HYPERLINK("http://evil")'
    write_csv(path, [f"{trigger}head"], [[[value]]])
    assert read(path) == [[f"'{trigger}head"], [f"'{value}"]]


def test_formula_guard_leaves_numbers_and_safe_text(tmp_path: Path) -> None:
    path = tmp_path / "out.csv"
    write_csv(path, ["n", "f", "s", "t"], [[[-5, -1.5, "a=b", " =1"]]])
    assert read(path)[1] == ["-5", "-1.5", "a=b", " =1"]


def test_formula_guard_off(tmp_path: Path) -> None:
    path = tmp_path / "out.csv"
    write_csv(path, ["=h"], [[["=1+1", "@SUM(A1)", "-2+3"]]], formula_guard=False)
    assert read(path) == [["=h"], ["=1+1", "@SUM(A1)", "-2+3"]]


def test_count_rows_counts_records_not_lines(tmp_path: Path) -> None:
    path = tmp_path / "out.csv"
    write_csv(path, HEADER, [ROWS], bom=True)
    assert count_rows(path) == 3


def test_empty_export_is_a_header(tmp_path: Path) -> None:
    path = tmp_path / "out.csv"
    assert write_csv(path, ["a"], []) == 0
    assert read(path) == [["a"]]


# The pipe: an async source feeding a writer thread through a bounded queue.


async def source(n: int, pulled: list[int], size: int = 2) -> AsyncIterator[list[list[Cell]]]:
    for i in range(n):
        pulled.append(i)
        yield [[i, f"row {i}"]] * size


async def test_pipe_writes_everything_and_overlaps_with_bounded_lead(tmp_path: Path) -> None:
    pulled: list[int] = []
    lead: list[int] = []

    def writer(batches: Iterator[list[list[Cell]]]) -> int:
        def watched() -> Iterator[list[list[Cell]]]:
            for k, batch in enumerate(batches):
                lead.append(len(pulled) - k)  # batches read ahead of the one being written
                yield batch

        return write_csv(tmp_path / "out.csv", ["n", "s"], watched())

    assert await write_in_thread(writer, source(50, pulled), depth=2) == 100
    assert count_rows(tmp_path / "out.csv") == 100
    assert max(lead) <= 4  # the queue's depth plus the item in each hand, never the whole source


async def test_pipe_surfaces_the_writer_error_and_stops_reading(tmp_path: Path) -> None:
    pulled: list[int] = []

    def writer(batches: Iterator[list[list[Cell]]]) -> int:
        for k, _ in enumerate(batches):
            if k == 3:
                raise ValueError("disk full")
        return 0

    with pytest.raises(ValueError, match="disk full"):
        await write_in_thread(writer, source(1000, pulled))
    assert len(pulled) < 10


async def test_pipe_cancel_stops_the_writer_thread(tmp_path: Path) -> None:
    stopped = threading.Event()
    started = asyncio.Event()
    loop = asyncio.get_running_loop()

    async def endless() -> AsyncIterator[list[list[Cell]]]:
        while True:
            await asyncio.sleep(0.001)
            yield [[1]]

    def writer(batches: Iterator[list[list[Cell]]]) -> int:
        try:
            for _ in batches:
                loop.call_soon_threadsafe(started.set)
            return 0
        finally:
            stopped.set()

    task = asyncio.ensure_future(write_in_thread(writer, endless()))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert stopped.is_set()  # joined before the cancel returned: nothing writes afterwards


async def test_pipe_honours_the_cancelled_event(tmp_path: Path) -> None:
    flag = threading.Event()
    pulled: list[int] = []

    def writer(batches: Iterator[list[list[Cell]]]) -> int:
        for k, _ in enumerate(batches):
            if k == 2:
                flag.set()
        return 0

    with pytest.raises(asyncio.CancelledError):
        await write_in_thread(writer, source(1000, pulled), cancelled=flag)
    assert len(pulled) < 10


def test_datetimes_keep_their_offset(tmp_path: Path) -> None:
    path = tmp_path / "out.csv"
    write_csv(path, ["t"], [[[datetime(2026, 1, 1, 12, 30, 15, 250000, tzinfo=UTC)]]])
    assert read(path)[1] == ["2026-01-01T12:30:15.250000+00:00"]


# PostgreSQL's COPY output for the same kind of data: LF after each record, LF or CRLF kept
# inside quoted fields, quotes doubled.
COPY_OUT = b'1,"line\nbreak and\r\ncrlf",x\n2,"q""\n""",\n3,plain,"a,b"\n4,"",""""\n'
EXPECTED = b'1,"line\nbreak and\r\ncrlf",x\r\n2,"q""\n""",\r\n3,plain,"a,b"\r\n4,"",""""\r\n'


@pytest.mark.parametrize("cut", range(len(COPY_OUT) + 1))
def test_copy_output_gets_crlf_record_ends_wherever_the_chunks_are_cut(cut: int) -> None:
    crlf = CrlfRecords()
    assert crlf(COPY_OUT[:cut]) + crlf(COPY_OUT[cut:]) == EXPECTED
    assert crlf.records == 4
    assert not crlf.quoted


def test_copy_output_reads_back_as_the_rows(tmp_path: Path) -> None:
    crlf = CrlfRecords()
    path = tmp_path / "copy.csv"
    path.write_bytes(
        header_line(["=id", "text", "more"], bom=True) + b"".join(crlf(bytes([b])) for b in COPY_OUT)
    )
    assert read(path, "utf-8-sig") == [
        ["'=id", "text", "more"],
        ["1", "line\nbreak and\r\ncrlf", "x"],
        ["2", 'q"\n"', ""],
        ["3", "plain", "a,b"],
        ["4", "", '"'],
    ]
    assert count_rows(path) == 4
