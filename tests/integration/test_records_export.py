"""Formats csv, xlsx and pdf end to end against PostgreSQL: each strategy's steps run in
order, the uploaded file is read back with a real reader (csv, openpyxl, pypdf) and compared
with the records inserted, including filters, sort, columns, labels and time zones."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4
from zoneinfo import ZoneInfo

import asyncpg
import openpyxl
import pytest
from prometheus_client import REGISTRY
from pydantic import BaseModel
from pypdf import PdfReader

from service import seed_data, tools
from service.config import Settings
from service.errors import PermanentError
from service.steps import StepContext, Strategy
from service.storage import LocalStorage
from service.strategies import load_registry, records
from tests.support.api import api_client, bearer
from tests.support.data import create_user

pytestmark = pytest.mark.timeout(120)

NEW_YORK = ZoneInfo("America/New_York")
BASE = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LONG = "lorem ipsum dolor sit amet " * 80
HOSTILE_CSV = '=HYPERLINK("http://evil.example","x")'
HOSTILE_PDF = "<b>bold</b> & <font name=x>&amp;</font> <para>"
# Submissions of the demo form: unicode, nulls, a missing field, long text, numbers, a list,
# a date, formula-looking and markup-looking text.
SUBMISSIONS: list[dict[str, Any]] = [
    {"full_name": "Zoë Müller", "email": "zoe@example.com", "age": 34, "newsletter": True, "country": "DE",
     "interests": ["news", "events"], "birthday": "1991-04-05", "comments": "Ελληνικά, русский, 名前 ✓"},
    {"full_name": 'Sam "Q" Lee', "email": None, "age": 27.5, "newsletter": False, "country": "US",
     "interests": [], "birthday": None, "comments": LONG},
    {"full_name": HOSTILE_CSV, "email": "-2+3", "age": -7, "newsletter": None, "country": "FR",
     "interests": ["offers"], "birthday": "2001-12-31", "comments": HOSTILE_PDF},
    {"full_name": "Ion O'Neil", "email": "ion@example.com", "age": 61, "country": "RO",
     "comments": "line one\nline two, with comma"},
]  # fmt: skip


async def insert(
    pool: asyncpg.Pool, tool_type: str, metadata: dict[str, Any], rows: list[dict[str, Any]]
) -> UUID:
    """A tool whose i-th record was created at BASE + i hours."""
    async with pool.acquire() as conn:
        tool_id = await seed_data.insert_tool(
            conn, owner_id=None, tool_type=tool_type, name="Survey ✓", metadata=metadata
        )
        await conn.executemany(
            "INSERT INTO tool_records (tool_id, data, created_at) VALUES ($1, $2::text::jsonb, $3)",
            [(tool_id, json.dumps(r), BASE + timedelta(hours=i)) for i, r in enumerate(rows)],
        )
    return tool_id


async def forms_tool(pool: asyncpg.Pool, rows: list[dict[str, Any]] = SUBMISSIONS) -> UUID:
    return await insert(pool, "forms", seed_data.form_metadata(), rows)


class Run:
    def __init__(self, ctx: StepContext, strategy: Strategy, storage: LocalStorage) -> None:
        self.ctx, self.strategy, self.storage = ctx, strategy, storage
        self.fractions: list[float] = []
        ctx.report = self.fractions.append

    async def steps(self, until: str | None = None) -> None:
        for step in self.strategy.steps:
            await step.run(self.ctx)
            if step.name == until:
                return

    @property
    def file(self) -> Path:
        assert self.ctx.package is not None
        return self.storage.path(self.ctx.package.key)


async def prepare(
    pool: asyncpg.Pool, settings: Settings, tmp_path: Path, tool_id: UUID, fmt: str, options: dict[str, Any]
) -> Run:
    """A StepContext for the strategy of (tool type, fmt), the way the worker builds it."""
    tool = await tools.get_tool(pool, tool_id)
    assert tool is not None
    strategy = load_registry()[(tool.type, fmt)]
    # Through JSON, as the API stores the options and the worker reads them back.
    stored = strategy.options.model_validate(options).model_dump(mode="json", exclude_unset=True)
    parsed: BaseModel = strategy.options.model_validate(stored)
    storage = LocalStorage(tmp_path / "storage")
    workdir = tmp_path / "work"
    workdir.mkdir(parents=True)
    ctx = StepContext(
        job_id=uuid4(), user_id=None, attempt=1, format=fmt, options=parsed, tool=tool, strategy=strategy.name,
        work_path=workdir, pool=pool, settings=settings, storage=storage,
    )  # fmt: skip
    return Run(ctx, strategy, storage)


async def export(
    pool: asyncpg.Pool,
    settings: Settings,
    tmp_path: Path,
    tool_id: UUID,
    fmt: str,
    options: dict[str, Any] | None = None,
) -> Run:
    run = await prepare(pool, settings, tmp_path, tool_id, fmt, options or {})
    await run.steps()
    return run


def exported(fmt: str) -> float:
    return REGISTRY.get_sample_value("exporter_rows_exported_total", {"format": fmt}) or 0.0


def read_csv(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.reader(fh))


async def test_registry_has_record_formats_for_tools_with_records_only() -> None:
    registry = load_registry()
    for tool_type in ("forms", "workflows"):
        for fmt in ("csv", "xlsx", "pdf"):
            strategy = registry[(tool_type, fmt)]
            assert strategy.options is records.OPTIONS[fmt]
            assert [s.name for s in strategy.steps] == ["validate", "write", "verify", "upload"]
    assert not {("themes", f) for f in ("csv", "xlsx", "pdf")} & set(registry)


async def test_csv_matches_the_records(pool: asyncpg.Pool, settings: Settings, tmp_path: Path) -> None:
    tool_id = await forms_tool(pool)
    before = exported("csv")
    run = await export(pool, settings, tmp_path, tool_id, "csv", {"time_zone": "America/New_York"})

    rows = read_csv(run.file)
    assert rows[0] == ["Record ID", "Created at", "Full name", "E-mail", "Age", "Newsletter", "Country",
                       "Interests", "Birthday", "Comments"]  # fmt: skip
    assert len(rows) == 1 + len(SUBMISSIONS)
    for i, (row, source) in enumerate(zip(rows[1:], SUBMISSIONS, strict=True)):
        created = datetime.fromisoformat(row[1])
        assert created == BASE + timedelta(hours=i)
        assert created.utcoffset() == timedelta(hours=-5)  # EST on 1 March, not UTC
        by_name = dict(
            zip(
                ["full_name", "email", "age", "newsletter", "country", "interests", "birthday", "comments"],
                row[2:],
                strict=True,
            )
        )
        for name, text in by_name.items():
            value = source.get(name)
            if value is None:
                assert text == ""
            elif isinstance(value, bool):
                assert text == str(value).lower()
            elif isinstance(value, list):
                assert json.loads(text) == value
            elif isinstance(value, str) and value[:1] in "=+-@":
                assert text == "'" + value  # the formula guard, on by default
            else:
                assert text == str(value)
    assert rows[2][9] == LONG
    assert rows[4][9] == "line one\nline two, with comma"
    raw = run.file.read_bytes()  # written by PostgreSQL's COPY: records end in CRLF, as RFC 4180 asks
    assert raw.count(b"\r\n") == 1 + len(SUBMISSIONS) and raw.endswith(b"\r\n")
    assert b'"line one\nline two, with comma"' in raw
    assert exported("csv") - before == len(SUBMISSIONS)

    package = run.ctx.package
    assert package is not None
    assert package.filename == f"forms-{tool_id}-records.csv"
    assert package.key == f"{run.ctx.job_id}/{package.filename}"
    assert package.content_type.startswith("text/csv")
    assert package.size == run.file.stat().st_size
    assert run.fractions[-1] == 1.0
    assert run.fractions == sorted(run.fractions)


async def test_csv_columns_labels_filters_sort_bom_and_name(
    pool: asyncpg.Pool, settings: Settings, tmp_path: Path
) -> None:
    rows = [
        {"full_name": f"p{i}", "age": i % 4, "country": "FR" if i % 2 else "DE", "newsletter": i % 3 == 0}
        for i in range(40)
    ]
    rows[5]["age"] = 1.0  # equal to 1 as JSON numbers
    del rows[9]["age"]  # missing: only a null filter matches it
    tool_id = await forms_tool(pool, rows)
    options = {
        "columns": ["age", "full_name", "created_at"],
        "labels": {"full_name": "Name", "created_at": "When"},
        "filters": {
            "created_from": "2026-03-01T13:00:00",
            "created_to": "2026-03-02T12:00:00+00:00",
            "equals": {"age": 1, "country": "FR"},
        },
        "sort": [{"field": "full_name", "direction": "desc"}],
        "time_zone": "UTC",
        "file_name": "Spring: report.csv",
        "bom": True,
        "formula_guard": False,
    }
    run = await export(pool, settings, tmp_path, tool_id, "csv", options)
    raw = run.file.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    got = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"), newline="")))
    assert got[0] == ["Age", "Name", "When"]
    # from 13:00 (naive: read in the export's zone) to the next day 12:00, exclusive.
    expected = [
        (i, r) for i, r in enumerate(rows)
        if 1 <= i < 24 and r.get("age") == 1 and r["country"] == "FR"
    ]  # fmt: skip
    expected.sort(key=lambda pair: pair[1]["full_name"], reverse=True)
    assert [row[1] for row in got[1:]] == [r["full_name"] for _, r in expected]
    assert {row[0] for row in got[1:]} == {"1", "1.0"}
    assert run.ctx.package is not None and run.ctx.package.filename == "Spring_ report.csv"

    nulls = await export(
        pool,
        settings,
        tmp_path / "n",
        tool_id,
        "csv",
        {"columns": ["full_name"], "filters": {"equals": {"age": None}}},
    )
    assert read_csv(nulls.file)[1:] == [["p9"]]


async def test_xlsx_has_native_types_and_a_styled_frozen_header(
    pool: asyncpg.Pool, settings: Settings, tmp_path: Path
) -> None:
    tool_id = await forms_tool(pool)
    run = await export(pool, settings, tmp_path, tool_id, "xlsx", {"time_zone": "America/New_York"})
    book = openpyxl.load_workbook(run.file)
    assert book.sheetnames == ["Records"]
    sheet = book["Records"]
    assert sheet.freeze_panes == "A2"
    assert all(cell.font.bold for cell in sheet[1])
    values = list(sheet.iter_rows(min_row=2, values_only=True))
    assert len(values) == len(SUBMISSIONS)
    for i, (row, source) in enumerate(zip(values, SUBMISSIONS, strict=True)):
        assert row[1] == (BASE + timedelta(hours=i)).astimezone(NEW_YORK).replace(tzinfo=None)
        assert row[4] == source.get("age")
        assert row[5] == source.get("newsletter")
        birthday = source.get("birthday")
        assert row[8] == (datetime.combine(date.fromisoformat(birthday), time()) if birthday else None)
    assert isinstance(values[0][1], datetime)
    assert values[0][2] == "Zoë Müller" and values[0][9] == SUBMISSIONS[0]["comments"]
    assert json.loads(values[0][7]) == ["news", "events"]
    hostile = sheet.cell(row=4, column=3)
    assert hostile.value == HOSTILE_CSV and hostile.data_type == "s"  # text, never a formula
    assert values[1][9] == LONG
    assert run.ctx.package is not None and run.ctx.package.filename.endswith(".xlsx")


async def test_pdf_holds_every_row_with_its_header_on_each_page(
    pool: asyncpg.Pool, settings: Settings, tmp_path: Path
) -> None:
    rows = SUBMISSIONS + [
        {"full_name": f"Person {i:03d}", "country": "RO", "comments": "Ünïcødé"} for i in range(150)
    ]
    tool_id = await forms_tool(pool, rows)
    run = await export(
        pool, settings, tmp_path, tool_id, "pdf",
        {"columns": ["record_id", "created_at", "full_name", "comments"], "time_zone": "Asia/Tokyo", "title": "Spring <survey> & co"},
    )  # fmt: skip
    reader = PdfReader(run.file)
    pages = [page.extract_text() for page in reader.pages]
    assert len(pages) > 1
    text = "\n".join(pages)
    for i, page in enumerate(pages, start=1):
        assert "Spring <survey> & co" in page
        assert "Full name" in page and "Comments" in page
        assert f"Page {i} of {len(pages)}" in " ".join(page.split())
    for i in range(150):
        assert f"Person {i:03d}" in text
    assert "Zoë Müller" in text and "Ελληνικά, русский" in text
    assert HOSTILE_PDF in text
    assert "2026-03-01 21:00:00+09:00" in text  # BASE in Tokyo
    # A cell longer than MAX_CELL_LINES lines is cut with an ellipsis so its row fits a page.
    squeezed = "".join(text.split())
    assert "".join(LONG[:600].split()) in squeezed and "".join(LONG.split()) not in squeezed
    assert "…" in text
    assert run.ctx.package is not None and run.ctx.package.content_type == "application/pdf"


async def test_pdf_wraps_long_text_whole(pool: asyncpg.Pool, settings: Settings, tmp_path: Path) -> None:
    tool_id = await forms_tool(pool, [{"full_name": "x", "comments": LONG[:900]}])
    run = await export(pool, settings, tmp_path, tool_id, "pdf", {"columns": ["full_name", "comments"]})
    text = PdfReader(run.file).pages[0].extract_text()
    assert "".join(LONG[:900].split()) in "".join(text.split())


async def test_workflow_dates_are_in_the_requested_zone(
    pool: asyncpg.Pool, settings: Settings, tmp_path: Path
) -> None:
    executions = list(seed_data.workflow_executions(5))
    tool_id = await insert(pool, "workflows", seed_data.workflow_metadata(), executions)
    run = await export(pool, settings, tmp_path, tool_id, "csv", {"time_zone": "Europe/Bucharest"})
    rows = read_csv(run.file)
    assert rows[0][2:] == [
        "Execution",
        "Status",
        "Current state",
        "Started at",
        "Finished at",
        "Input",
        "History",
    ]
    for row, source in zip(rows[1:], executions, strict=True):
        assert row[2] == source["execution_id"]
        started = datetime.fromisoformat(row[5])
        assert started == datetime.fromisoformat(source["started_at"])
        assert started.utcoffset() == timedelta(hours=2)
        assert row[6] == ("" if source["finished_at"] is None else row[6])
        assert json.loads(row[7]) == source["input"]
        assert json.loads(row[8]) == source["history"]

    xlsx = await export(pool, settings, tmp_path / "x", tool_id, "xlsx", {"time_zone": "Europe/Bucharest"})
    sheet = openpyxl.load_workbook(xlsx.file)["Records"]
    first = next(sheet.iter_rows(min_row=2, values_only=True))
    started_utc = datetime.fromisoformat(executions[0]["started_at"])
    assert first[5] == started_utc.astimezone(ZoneInfo("Europe/Bucharest")).replace(tzinfo=None)


async def test_records_that_are_not_objects_export_as_empty_rows(
    pool: asyncpg.Pool, settings: Settings, tmp_path: Path
) -> None:
    tool_id = await forms_tool(pool, [{"full_name": "a"}])
    await pool.execute("INSERT INTO tool_records (tool_id, data) VALUES ($1, '[1, 2]'::text::jsonb)", tool_id)
    run = await export(pool, settings, tmp_path, tool_id, "csv", {"columns": ["full_name"]})
    assert read_csv(run.file) == [["Full name"], ["a"], [""]]


async def test_unknown_fields_fail_validation_before_anything_is_written(
    pool: asyncpg.Pool, settings: Settings, tmp_path: Path
) -> None:
    tool_id = await forms_tool(pool)
    for options in (
        {"columns": ["full_name", "salary"]},
        {"labels": {"nope": "x"}},
        {"sort": [{"field": "nope"}]},
        {"filters": {"equals": {"created_at": "x"}}},
    ):
        run = await prepare(pool, settings, tmp_path / uuid4().hex, tool_id, "csv", options)
        with pytest.raises(PermanentError) as caught:
            await run.steps()
        assert caught.value.code == "unknown_field"
        assert list(run.ctx.workdir.iterdir()) == []


async def test_undo_removes_the_file_and_the_upload(
    pool: asyncpg.Pool, settings: Settings, tmp_path: Path
) -> None:
    run = await export(pool, settings, tmp_path, await forms_tool(pool), "csv")
    uploaded = run.file
    assert uploaded.exists()
    for step in reversed(run.strategy.steps):
        await step.undo(run.ctx)
    assert not uploaded.exists()
    assert list(run.ctx.workdir.iterdir()) == []


async def test_pdf_refuses_too_many_rows(
    pool: asyncpg.Pool, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(records, "PDF_MAX_ROWS", 3)
    run = await prepare(pool, settings, tmp_path, await forms_tool(pool), "pdf", {})
    with pytest.raises(PermanentError) as caught:
        await run.steps()
    assert caught.value.code == "too_many_rows"
    assert not (run.ctx.workdir / "records.pdf.partial").exists()


async def test_progress_moves_within_the_write_and_cancel_stops_it(
    pool: asyncpg.Pool, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(records, "BATCH_SIZE", 10)
    tool_id = await forms_tool(pool, [{"full_name": f"p{i}"} for i in range(100)])
    run = await export(pool, settings, tmp_path, tool_id, "xlsx")
    assert [round(f, 2) for f in run.fractions] == [round(0.1 * k, 2) for k in range(1, 11)] + [1.0]

    cancelled = await prepare(pool, settings, tmp_path / "c", tool_id, "csv", {})
    cancelled.ctx.report = lambda fraction: fraction >= 0.3 and cancelled.ctx.cancelled.set()  # type: ignore[func-returns-value]
    with pytest.raises(asyncio.CancelledError):
        await cancelled.steps()
    assert list(cancelled.ctx.workdir.iterdir()) == []


async def test_filters_and_sort_fields_are_parameters_not_sql(pool: asyncpg.Pool) -> None:
    evil = "x'); DROP TABLE tool_records; --"
    tool_id = await forms_tool(pool, [{evil: 1, "n": 2}, {evil: 2, "n": 1}, {"n": 3}])
    query = tools.RecordQuery(equals={evil: 2}, sort=[(evil, True)])
    async with tools.open_records(pool, tool_id, query) as (total, batches):
        got = [json.loads(r["data"]) async for batch in batches for r in batch]
    assert total == 1 and got == [{evil: 2, "n": 1}]
    query = tools.RecordQuery(sort=[(evil, True), ("n", False)])
    async with tools.open_records(pool, tool_id, query, batch_size=2) as (total, batches):
        got = [json.loads(r["data"])["n"] async for batch in batches for r in batch]
    # Descending with missing last, then by n.
    assert total == 3 and got == [1, 2, 3]
    assert await pool.fetchval("SELECT count(*) FROM tool_records") == 3


async def test_api_refuses_bad_options_with_422(pool: asyncpg.Pool, settings: Settings) -> None:
    user = await create_user(pool, ["exporter"])
    async with pool.acquire() as conn:
        tool_id = await seed_data.insert_tool(
            conn, owner_id=user, tool_type="forms", name="f", metadata=seed_data.form_metadata()
        )
    async with api_client(settings, with_relay=False) as client:
        for fmt, options, where in (
            ("csv", {"bom": "yes"}, "options.bom"),
            ("csv", {"time_zone": "Mars/Olympus"}, "options.time_zone"),
            ("csv", {"file_name": "../../etc/passwd"}, "options.file_name"),
            ("xlsx", {"bom": True}, "options.bom"),
            ("pdf", {"sort": [{"field": "age", "direction": "sideways"}]}, "options.sort.0.direction"),
        ):
            response = await client.post(
                "/v1/exports",
                json={"tool_id": str(tool_id), "format": fmt, "options": options},
                headers=bearer(settings, user, ["exporter"]),
            )
            assert response.status_code == 422, (fmt, options)
            error = response.json()["error"]
            assert error["code"] == "invalid_options" and error["message"].startswith(where)
        accepted = await client.post(
            "/v1/exports",
            json={
                "tool_id": str(tool_id),
                "format": "pdf",
                "options": {"columns": ["full_name"], "time_zone": "Asia/Tokyo"},
            },
            headers=bearer(settings, user, ["exporter"]),
        )
    assert accepted.status_code == 202


async def test_csv_formula_guard_in_the_database_covers_every_trigger_and_only_text(
    pool: asyncpg.Pool, settings: Settings, tmp_path: Path
) -> None:
    hostile = ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx", "-", "safe", "1-2"]
    rows: list[dict[str, Any]] = [{"full_name": value, "age": -5} for value in hostile]
    rows.append({"full_name": ["=a"], "age": {"b": "=c"}})  # arrays and objects are JSON, not cells
    tool_id = await forms_tool(pool, rows)
    guarded = await export(pool, settings, tmp_path / "on", tool_id, "csv", {"columns": ["full_name", "age"]})
    assert read_csv(guarded.file)[1:] == [
        *(["'" + v if v[:1] in "=+-@\t\r" else v, "-5"] for v in hostile),
        ['["=a"]', '{"b": "=c"}'],
    ]
    raw = await export(
        pool, settings, tmp_path / "off", tool_id, "csv", {"columns": ["full_name"], "formula_guard": False}
    )
    assert [r[0] for r in read_csv(raw.file)[1:-1]] == hostile
