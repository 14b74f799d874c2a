"""Format `package` for forms: a Node.js + Express + TypeScript service over PostgreSQL
that serves the form and its submissions, with migrations, data, Docker and a README.

Reads the forms metadata contract documented in service.seed_data.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import date
from typing import Any

import asyncpg

from service import tools
from service.packaging.escape import IdentifierSet, sql_ident
from service.seed_data import FIELD_TYPES
from service.steps import Step, StepContext, Strategy
from service.strategies.package_common import (
    NODE_SCAFFOLD,
    archive_step,
    copy_assets,
    pkg_root,
    remove,
    render_files,
    require,
    write_json,
    write_node_scaffold,
    write_notes,
    write_records_csv,
)

TABLE = "form_submissions"
MAX_FIELDS = 500  # PostgreSQL allows 1600 columns; a form past this is not a form
# field type → (SQL column type, TypeScript type of the column in a row)
KINDS = {
    "number": ("numeric", "string"),
    "checkbox": ("boolean", "boolean"),
    "date": ("date", "Date"),
    "multiselect": ("jsonb", "unknown"),
}
TEXT = ("text", "string")
NUMBER = re.compile(r"^-?\d+(\.\d+)?$")
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
TRUE, FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}

BOILERPLATE = (
    ("src/server.ts", "forms/src/server.ts"),
    ("src/submissions.ts", "forms/src/submissions.ts"),
    ("scripts/setup.sh", "node/setup.sh"),
)
DOCKER = (
    ("Dockerfile", "node/Dockerfile"),
    ("docker-compose.yml", "node/docker-compose.yml"),
    (".env.example", "node/env.example"),
    (".dockerignore", "node/dockerignore"),
)
MIGRATIONS = (
    ("db/migrations/0001_init.up.sql", "forms/db/0001_init.up.sql"),
    ("db/migrations/0001_init.down.sql", "forms/db/0001_init.down.sql"),
)


@dataclass(frozen=True)
class Column:
    field: str  # the field's name in the form and in each submission
    label: str
    column: str  # a safe SQL / TypeScript identifier
    kind: str
    sql_type: str
    ts_type: str
    required: bool
    options: tuple[str, ...]


def _fields(ctx: StepContext) -> list[dict[str, Any]]:
    fields = ctx.tool.metadata.get("fields")
    return fields if isinstance(fields, list) else []


def plan(ctx: StepContext) -> tuple[list[Column], list[dict[str, str]]]:
    """The column of each field (the same every time for the same metadata), and notes."""
    names = IdentifierSet(reserved=("submission_id", "submitted_at", "data"))
    columns, notes = [], []
    for field in _fields(ctx):
        kind = field.get("type") if isinstance(field.get("type"), str) else "text"
        if kind not in FIELD_TYPES:
            notes.append(
                {"step": "validate", "field": field["name"], "note": f"unknown type {kind!r} kept as text"}
            )
            kind = "text"
        sql_type, ts_type = KINDS.get(kind, TEXT)
        options = field.get("options")
        columns.append(
            Column(
                field=field["name"],
                label=str(field.get("label") or field["name"]),
                column=names.add(field["name"]),
                kind=kind,
                sql_type=sql_type,
                ts_type=ts_type,
                required=field.get("required") is True,
                options=tuple(str(o) for o in options) if isinstance(options, list) else (),
            )
        )
    return columns, notes


def _sql(columns: list[Column]) -> dict[str, str]:
    cols = ", ".join(sql_ident(c.column) for c in columns)
    params = ", ".join(f"${i}" for i in range(1, len(columns) + 2))
    table = sql_ident(TABLE)
    select = f"SELECT submission_id, submitted_at, {cols}, data FROM {table}"
    return {
        "definition": "SELECT definition FROM form_definition LIMIT 1",
        "page": f"{select} WHERE submission_id > $1 ORDER BY submission_id LIMIT $2",
        "one": f"{select} WHERE submission_id = $1",
        "insert": f"INSERT INTO {table} ({cols}, data) VALUES ({params}) RETURNING submission_id",
        "copy": f"COPY {table} (submission_id, submitted_at, {cols}, data) FROM STDIN WITH (FORMAT csv, HEADER true)",
        "exists": f"SELECT EXISTS (SELECT 1 FROM {table}) AS loaded",
        "after": f"SELECT setval(pg_get_serial_sequence('{TABLE}', 'submission_id'), COALESCE(MAX(submission_id), 0) + 1, false) FROM {table}",
    }


def _title(ctx: StepContext) -> str:
    title = ctx.tool.metadata.get("title")
    return title if isinstance(title, str) and title.strip() else ctx.tool.name


async def validate(ctx: StepContext) -> None:
    fields = _fields(ctx)
    require(bool(ctx.tool.name.strip()), "the tool has no name")
    require(len(fields) > 0, "the form has no schema (metadata.fields is empty)")
    require(len(fields) <= MAX_FIELDS, f"the form has more than {MAX_FIELDS} fields")
    for i, field in enumerate(fields):
        ok = isinstance(field, dict) and isinstance(field.get("name"), str) and field["name"].strip()
        require(bool(ok), f"form field {i + 1} has no name")
    _columns, notes = plan(ctx)
    write_notes(ctx, "validate", notes)


async def boilerplate(ctx: StepContext) -> None:
    columns, _ = plan(ctx)
    sql = _sql(columns)
    write_node_scaffold(
        ctx,
        name=ctx.tool.name,
        description=f"Standalone service for the form {_title(ctx)}",
        csv_path="data/submissions.csv",
        copy_sql=sql["copy"],
        exists_sql=sql["exists"],
        after_sql=sql["after"],
    )
    render_files(ctx, BOILERPLATE, name=ctx.tool.name)


def _cell(kind: str, value: Any) -> str | None:
    """The CSV text of one answer in its column's type; None (NULL) when it does not fit."""
    if value is None:
        return None
    if kind == "number":
        if isinstance(value, bool):
            return None
        if isinstance(value, int) or (isinstance(value, float) and math.isfinite(value)):
            return repr(value)
        return value.strip() if isinstance(value, str) and NUMBER.match(value.strip()) else None
    if kind == "checkbox":
        if isinstance(value, bool):
            return "true" if value else "false"
        text = str(value).strip().lower()
        return "true" if text in TRUE else "false" if text in FALSE else None
    if kind == "date":
        if not isinstance(value, str) or not DATE.match(value):
            return None
        try:
            date.fromisoformat(value)
        except ValueError:
            return None
        return value
    if kind == "multiselect" or isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


async def copy_data(ctx: StepContext) -> None:
    columns, _ = plan(ctx)
    root = pkg_root(ctx)
    write_json(root / "data" / "form-schema.json", ctx.tool.metadata)
    _copied, notes = await copy_assets(ctx, pkg_root(ctx) / "data/assets", "data")
    write_notes(ctx, "data", notes)

    def to_row(r: asyncpg.Record) -> list[object]:
        data = json.loads(r["data"])
        answers = data if isinstance(data, dict) else {}
        cells = [_cell(c.kind, answers.get(c.field)) for c in columns]
        return [r["record_id"], r["created_at"].isoformat(), *cells, r["data"]]

    header = ["submission_id", "submitted_at", *(c.column for c in columns), "data"]
    await write_records_csv(ctx, root / "data" / "submissions.csv", header, to_row)


async def schema(ctx: StepContext) -> None:
    columns, _ = plan(ctx)
    render_files(
        ctx,
        [("src/model.ts", "forms/src/model.ts")],
        columns=columns,
        kinds=FIELD_TYPES,
        table=TABLE,
        sql=_sql(columns),
    )


async def migrations(ctx: StepContext) -> None:
    columns, _ = plan(ctx)
    form_id = ctx.tool.metadata.get("form_id")
    render_files(
        ctx,
        MIGRATIONS,
        columns=columns,
        table=TABLE,
        form_id=form_id if isinstance(form_id, str) and form_id else str(ctx.tool.tool_id),
        title=_title(ctx),
        definition=json.dumps(ctx.tool.metadata, ensure_ascii=False, sort_keys=True),
        exported_at=ctx.tool.updated_at,
    )


async def docker(ctx: StepContext) -> None:
    render_files(ctx, DOCKER, title=_title(ctx), description=f"Form service: {_title(ctx)}")


EXAMPLES = {
    "email": "someone@example.com",
    "number": 42,
    "checkbox": True,
    "date": "2026-01-31",
    "url": "https://example.com",
    "phone": "+1 555 0100",
}


def _example(columns: list[Column]) -> str:
    body: dict[str, Any] = {}
    for c in columns:
        if c.kind in ("select", "radio"):
            body[c.field] = c.options[0] if c.options else "example"
        elif c.kind == "multiselect":
            body[c.field] = list(c.options[:1])
        else:
            body[c.field] = EXAMPLES.get(c.kind, "example")
    return json.dumps(body, ensure_ascii=False)


async def readme(ctx: StepContext) -> None:
    columns, _ = plan(ctx)
    submissions = await tools.count_records(ctx.pool, ctx.tool.tool_id)
    render_files(
        ctx,
        [("README.md", "forms/README.md")],
        title=_title(ctx),
        tool_id=str(ctx.tool.tool_id),
        updated_at=ctx.tool.updated_at,
        submissions=submissions,
        table=TABLE,
        columns=columns,
        example=_example(columns),
    )


def _outputs(files: tuple[tuple[str, str], ...]) -> tuple[str, ...]:
    return tuple(f"pkg/{target}" for target, _ in files)


STEPS = (
    Step("validate", "Validating the form schema", validate, undo=remove(notes="validate"), retryable=False),
    Step(
        "boilerplate",
        "Generating the Express + TypeScript service",
        boilerplate,
        undo=remove(*NODE_SCAFFOLD, *(t for t, _ in BOILERPLATE)),
        outputs=(*(f"pkg/{name}" for name in NODE_SCAFFOLD), *_outputs(BOILERPLATE)),
    ),
    Step(
        "data",
        "Copying the form schema, submissions and assets",
        copy_data,
        undo=remove("data", notes="data"),
        outputs=("pkg/data/form-schema.json", "pkg/data/submissions.csv", "notes/data.json"),
    ),
    Step(
        "schema",
        "Generating the database model",
        schema,
        undo=remove("src/model.ts"),
        outputs=("pkg/src/model.ts",),
    ),
    Step(
        "migrations",
        "Generating SQL migrations",
        migrations,
        undo=remove("db"),
        outputs=_outputs(MIGRATIONS),
    ),
    Step(
        "docker",
        "Creating the Docker configuration",
        docker,
        undo=remove(*(t for t, _ in DOCKER)),
        outputs=_outputs(DOCKER),
    ),
    Step("readme", "Writing the README", readme, undo=remove("README.md"), outputs=("pkg/README.md",)),
    archive_step(),
)

STRATEGIES = [Strategy(name="forms-package", tool_type="forms", format="package", steps=STEPS)]
