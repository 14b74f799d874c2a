"""Formats csv, xlsx and pdf: a tool's records (form submissions, workflow executions) as
one file, with the columns, labels, filters, sort, time zone and file name the options ask for.

Steps: check the options against the tool's fields; stream the records from one snapshot
into the file, a bounded queue between the database and the writer thread; read the file
back; upload it. Themes have no records, so they have none of these formats.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, tzinfo
from functools import partial
from pathlib import Path
from typing import Any, cast

import asyncpg

from service import metrics, tools
from service.errors import PermanentError
from service.export_options import BUILTIN_COLUMNS, CsvOptions, PdfOptions, RecordOptions, XlsxOptions, zone
from service.formats import Cell, write_in_thread
from service.formats.csv_writer import BUFFER, CrlfRecords, count_rows, header_line, write_csv
from service.formats.pdf_writer import check_pdf, write_pdf
from service.formats.xlsx_writer import check_xlsx, write_xlsx
from service.packaging.archive import file_sha256
from service.steps import Package, Step, StepContext, Strategy, Tool

__all__ = ["PDF_MAX_ROWS", "STRATEGIES", "Column", "available_columns"]

CONTENT_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "pdf": "application/pdf",
}
OPTIONS: dict[str, type[RecordOptions]] = {"csv": CsvOptions, "xlsx": XlsxOptions, "pdf": PdfOptions}
RESULT = "records-written.json"  # what the write step produced, for the read-back
BATCH_SIZE = 2000
# A PDF of more rows is thousands of pages nobody reads, and the canvas holds every page
# until it saves: beyond this, ask for csv or xlsx, or filter.
PDF_MAX_ROWS = 100_000
# Writing a million rows takes minutes, past the default step timeout meant for quick steps.
WRITE_TIMEOUT = 3600.0


@dataclass(frozen=True)
class Column:
    name: str
    label: str
    # id, created (the record's own columns), text, number, bool, date, datetime, json
    kind: str


BUILTINS = (Column("record_id", "Record ID", "id"), Column("created_at", "Created at", "created"))
FORM_KINDS = {"number": "number", "checkbox": "bool", "date": "date", "multiselect": "json"}
WORKFLOW_COLUMNS = (
    Column("execution_id", "Execution", "text"),
    Column("status", "Status", "text"),
    Column("current_state", "Current state", "text"),
    Column("started_at", "Started at", "datetime"),
    Column("finished_at", "Finished at", "datetime"),
    Column("input", "Input", "json"),
    Column("history", "History", "json"),
)


def available_columns(tool: Tool) -> list[Column]:
    """Columns a tool's records can be exported with, in their default order."""
    if tool.type == "workflows":
        return [*BUILTINS, *WORKFLOW_COLUMNS]
    columns, seen = list(BUILTINS), set(BUILTIN_COLUMNS)
    fields = tool.metadata.get("fields")
    for field in fields if isinstance(fields, list) else []:
        name = field.get("name") if isinstance(field, dict) else None
        if not isinstance(name, str) or not name or name in seen:
            continue
        seen.add(name)
        label = field.get("label")
        kind = FORM_KINDS.get(str(field.get("type")), "text")
        columns.append(Column(name, label if isinstance(label, str) and label else name, kind))
    return columns


# CSV cells PostgreSQL can write itself (tools.CSV_CELLS); a datetime field needs Python's
# parsing (naive means UTC, any ISO form), so a CSV with one is written by write_csv instead.
COPY_CELLS = {"id": "id", "created": "created", "text": "field", "number": "field", "bool": "field",
              "date": "field", "json": "field"}  # fmt: skip


@dataclass(frozen=True)
class Plan:
    columns: list[Column]
    query: tools.RecordQuery
    zone: tzinfo
    filename: str


def _options(ctx: StepContext) -> RecordOptions:
    if not isinstance(ctx.options, OPTIONS[ctx.format]):
        raise PermanentError(
            f"{ctx.format} exports take {OPTIONS[ctx.format].__name__}", code="invalid_options"
        )
    return ctx.options


def plan(ctx: StepContext) -> Plan:
    """The export the options describe, checked against the tool's fields."""
    options = _options(ctx)
    available = {c.name: c for c in available_columns(ctx.tool)}
    names = options.columns or list(available)
    named = [*names, *options.labels, *(key.field for key in options.sort)]
    unknown = {n for n in named if n not in available}
    unknown |= {n for n in options.filters.equals if n not in available or n in BUILTIN_COLUMNS}
    if unknown:
        raise PermanentError(
            f"unknown field(s) {', '.join(sorted(map(repr, unknown)))}; "
            f"this tool's records have: {', '.join(available)}",
            code="unknown_field",
        )
    columns = [replace(available[n], label=options.labels.get(n, available[n].label)) for n in names]
    start, end = options.created_range()
    query = tools.RecordQuery(
        created_from=start,
        created_to=end,
        equals=dict(options.filters.equals),
        sort=[(key.field, key.direction == "desc") for key in options.sort],
    )
    return Plan(columns, query, zone(options.time_zone), _filename(ctx, options))


def _filename(ctx: StepContext, options: RecordOptions) -> str:
    ext = f".{ctx.format}"
    stem = options.file_name or ""
    if stem.lower().endswith(ext):
        stem = stem[: -len(ext)].rstrip(" .")
    return (stem or f"{ctx.tool.type}-{ctx.tool.tool_id}-records") + ext


def _as_date(value: Any) -> Cell:
    if type(value) is str:
        try:
            return date.fromisoformat(value)
        except ValueError:
            return value
    return cast(Cell, value)


def _as_datetime(value: Any, tz: tzinfo) -> Cell:
    if type(value) is str:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return value
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(tz)
    return cast(Cell, value)


def converter(columns: Sequence[Column], tz: tzinfo) -> Callable[[list[asyncpg.Record]], list[list[Cell]]]:
    """Rows of cells from a batch of open_records rows, dates in `tz`."""
    names = [c.name for c in columns]
    # Date-like fields are parsed where they sit; everything else is taken as JSON gives it.
    fixes: list[tuple[int, Callable[[Any], Cell]]] = [
        (i, _as_date if c.kind == "date" else partial(_as_datetime, tz=tz))
        for i, c in enumerate(columns)
        if c.kind in ("date", "datetime")
    ]
    with_created = "created_at" in names
    loads = json.loads

    def rows(batch: list[asyncpg.Record]) -> list[list[Cell]]:
        out = []
        for record_id, created, text in batch:
            data = loads(text)
            if type(data) is not dict:  # jsonb allows any value; only objects have fields
                data = {}
            # available_columns never offers data fields of these names, so they can't clash.
            data["record_id"] = record_id
            if with_created:
                data["created_at"] = created.astimezone(tz)
            row = [data.get(name) for name in names]
            for i, fix in fixes:
                row[i] = fix(row[i])
            out.append(row)
        return out

    return rows


async def validate(ctx: StepContext) -> None:
    plan(ctx)


def _output(ctx: StepContext) -> Path:
    return ctx.workdir / f"records.{ctx.format}"


def _writer(
    ctx: StepContext, p: Plan, total: int
) -> Callable[[Path, Sequence[str], Iterator[list[list[Cell]]]], dict[str, Any]]:
    options = _options(ctx)
    if isinstance(options, CsvOptions):
        return lambda path, header, rows: {
            "rows": write_csv(path, header, rows, bom=options.bom, formula_guard=options.formula_guard)
        }
    if isinstance(options, XlsxOptions):
        return lambda path, header, rows: vars(write_xlsx(path, header, rows, tmpdir=ctx.workdir))
    assert isinstance(options, PdfOptions)
    now = datetime.now(p.zone).isoformat(sep=" ", timespec="seconds")
    subtitle = f"Generated {now} ({getattr(p.zone, 'key', p.zone)}) · {total} records"
    return lambda path, header, rows: vars(
        write_pdf(
            path,
            header,
            rows,
            title=options.title or ctx.tool.name,
            subtitle=subtitle,
            orientation=options.orientation,
        )
    )


async def write(ctx: StepContext) -> None:
    p = plan(ctx)
    target = _output(ctx)
    part = target.with_name(target.name + ".partial")
    try:
        options = _options(ctx)
        if isinstance(options, CsvOptions) and all(c.kind in COPY_CELLS for c in p.columns):
            result = await _copy_csv(ctx, p, options, part)
        else:
            result = await _write_rows(ctx, p, part)
        ctx.report(1.0)
        (ctx.workdir / RESULT).write_text(json.dumps(result) + "\n", "utf-8")
        part.replace(target)
    except BaseException:
        part.unlink(missing_ok=True)
        raise


async def _copy_csv(ctx: StepContext, p: Plan, options: CsvOptions, part: Path) -> dict[str, Any]:
    """CSV straight from PostgreSQL's COPY: no row passes through Python objects."""
    kinds = [COPY_CELLS[c.kind] for c in p.columns]
    if options.formula_guard:
        kinds = ["guarded" if k == "field" else k for k in kinds]
    cells = [(kind, c.name) for kind, c in zip(kinds, p.columns, strict=True)]
    header = [c.label for c in p.columns]
    time_zone = getattr(p.zone, "key", "UTC")
    counter = metrics.ROWS_EXPORTED.labels(ctx.format)
    crlf = CrlfRecords()
    async with tools.records_csv(ctx.pool, ctx.tool.tool_id, p.query, cells, time_zone) as (total, copy):
        with part.open("wb", buffering=BUFFER) as fh:
            fh.write(header_line(header, bom=options.bom, formula_guard=options.formula_guard))

            # On the event loop: a chunk is one socket read's worth, rewritten mostly in C
            # (bytes.replace / split / count); the database does the row work.
            async def output(chunk: bytes) -> None:
                ctx.check_cancelled()
                before = crlf.records
                fh.write(crlf(chunk))
                counter.inc(crlf.records - before)
                ctx.report(crlf.records / total if total else 1.0)

            copied = await copy(output)
    ctx.check_cancelled()  # a cancel during the last chunk
    if copied != total or crlf.records != total:
        raise PermanentError(f"wrote {crlf.records} of {total} records", code="incomplete_export")
    return {"rows": copied}


async def _write_rows(ctx: StepContext, p: Plan, part: Path) -> dict[str, Any]:
    """Any format, rows converted in Python and written by the format's writer in a thread."""
    header = [c.label for c in p.columns]
    convert = converter(p.columns, p.zone)
    async with tools.open_records(ctx.pool, ctx.tool.tool_id, p.query, batch_size=BATCH_SIZE) as (
        total,
        batches,
    ):
        if ctx.format == "pdf" and total > PDF_MAX_ROWS:
            raise PermanentError(
                f"{total} records are too many for a PDF (at most {PDF_MAX_ROWS}): filter them or use csv or xlsx",
                code="too_many_rows",
            )
        write_file = _writer(ctx, p, total)
        counter = metrics.ROWS_EXPORTED.labels(ctx.format)

        def rows(batches: Iterator[list[asyncpg.Record]]) -> Iterator[list[list[Cell]]]:
            done = 0
            for batch in batches:
                ctx.check_cancelled()
                yield convert(batch)
                # The writer asks for the next batch once this one is written.
                done += len(batch)
                counter.inc(len(batch))
                ctx.report(done / total)

        result: dict[str, Any] = await write_in_thread(
            lambda batches: write_file(part, header, rows(batches)), batches, cancelled=ctx.cancelled
        )
    if result["rows"] != total:
        raise PermanentError(f"wrote {result['rows']} of {total} records", code="incomplete_export")
    return result


async def remove_output(ctx: StepContext) -> None:
    for path in (_output(ctx), ctx.workdir / RESULT):
        path.unlink(missing_ok=True)


def _read_back(fmt: str, path: Path, written: dict[str, Any]) -> None:
    if fmt == "csv":
        found = count_rows(path)
        if found != written["rows"]:
            raise PermanentError(
                f"the CSV holds {found} rows, {written['rows']} written", code="verification_failed"
            )
    elif fmt == "xlsx":
        sheets = check_xlsx(path)
        if sheets != written["sheets"]:
            raise PermanentError(
                f"the workbook holds {sheets} sheets, {written['sheets']} written", code="verification_failed"
            )
    else:
        check_pdf(path)


async def verify(ctx: StepContext) -> None:
    written = json.loads((ctx.workdir / RESULT).read_text("utf-8"))
    try:
        await ctx.in_thread(_read_back, ctx.format, _output(ctx), written)
    except (ValueError, OSError) as exc:
        raise PermanentError(
            f"the {ctx.format} file does not read back: {exc}", code="verification_failed"
        ) from exc


async def upload(ctx: StepContext) -> None:
    path = _output(ctx)
    filename = _filename(ctx, _options(ctx))
    sha256 = await ctx.in_thread(file_sha256, path)
    key = f"{ctx.job_id}/{filename}"
    content_type = CONTENT_TYPES[ctx.format]
    await ctx.storage.put(key, path, content_type)
    ctx.package = Package(key, filename, content_type, path.stat().st_size, sha256)


async def delete_upload(ctx: StepContext) -> None:
    await ctx.storage.delete(f"{ctx.job_id}/{_filename(ctx, _options(ctx))}")


def _steps(fmt: str) -> tuple[Step, ...]:
    name = fmt.upper()
    return (
        Step("validate", "Checking the export options against the tool's fields", validate, retryable=False),
        Step(
            "write",
            f"Writing records to {name}",
            write,
            undo=remove_output,
            timeout=WRITE_TIMEOUT,
            outputs=(f"records.{fmt}", RESULT),
        ),
        Step("verify", f"Reading the {name} file back", verify, timeout=WRITE_TIMEOUT, retryable=False),
        Step("upload", f"Uploading the {name} file", upload, undo=delete_upload),
    )


STRATEGIES = [
    Strategy(
        name=f"{tool_type}-{fmt}", tool_type=tool_type, format=fmt, steps=_steps(fmt), options=OPTIONS[fmt]
    )
    for tool_type in ("forms", "workflows")
    for fmt in ("csv", "xlsx", "pdf")
]
