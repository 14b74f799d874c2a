"""The tool registry and tool content (records, assets): the data exports read.

All SQL on tool_registry, tool_records and tool_assets lives here.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from service.db import Executor
from service.steps import Tool

__all__ = [
    "RecordQuery",
    "claimed_tool",
    "count_records",
    "get_tool",
    "get_tool_for_user",
    "iter_assets",
    "open_records",
    "records_csv",
    "stream_records",
]

GET_TOOL = """
SELECT tool_id, tool_name, tool_type, tool_metadata, owner_id, updated_at
FROM tool_registry WHERE tool_id = $1
"""

# The tool a request names, and whether its user exists: a worker's one lookup per delivery.
GET_TOOL_FOR_USER = """
SELECT tool_id, tool_name, tool_type, tool_metadata, owner_id, updated_at,
       EXISTS (SELECT FROM users WHERE user_id = $2) AS user_exists
FROM tool_registry WHERE tool_id = $1
"""

COUNT_RECORDS = "SELECT count(*) FROM tool_records WHERE tool_id = $1"

# Keyset batches instead of one long cursor: each batch is a short index scan, and the
# stream holds no transaction open between batches.
RECORDS_BATCH = """
SELECT record_id, data::text AS data, created_at
FROM tool_records
WHERE tool_id = $1 AND record_id > $2
ORDER BY record_id
LIMIT $3
"""

# Record exports (csv, xlsx, pdf): the filters shared by the count and the rows. Field names
# and values are parameters: $4 the names, $5 their values as JSON text; null matches a
# missing field too. The created_at bounds are optional ($2 inclusive, $3 exclusive). The
# cardinality test spares unfiltered exports a subquery per row.
FILTERED_RECORDS_WHERE = """
WHERE tool_id = $1
  AND ($2::timestamptz IS NULL OR created_at >= $2::timestamptz)
  AND ($3::timestamptz IS NULL OR created_at < $3::timestamptz)
  AND (cardinality($4::text[]) = 0 OR NOT EXISTS (
    SELECT FROM unnest($4::text[], $5::text[]) AS f(name, value)
    WHERE coalesce(data -> f.name, 'null'::jsonb) IS DISTINCT FROM f.value::jsonb
  ))
"""

COUNT_FILTERED_RECORDS = "SELECT count(*) FROM tool_records" + FILTERED_RECORDS_WHERE

# The whole data as text, decoded once per row by the caller: cheaper than having the
# database pick the fields (a subquery per row cost 4x). {order} is built by _order_by from
# fixed fragments only.
SELECT_FILTERED_RECORDS = (
    "SELECT record_id, created_at, data::text AS data FROM tool_records"
    + FILTERED_RECORDS_WHERE
    + "ORDER BY {order}"
)

# CSV exports as COPY ... TO STDOUT: PostgreSQL writes each cell as the Python writer would
# (fields as JSON gives them, arrays and objects as JSON text), created_at in its ISO output
# style (2026-03-01 21:00:00.123456+01) in the transaction's time zone: to_char cost a sixth
# of the export. Field names are parameters (${n}), never text in the statement.
CSV_CELLS = {
    "id": "record_id",
    "created": "created_at",
    "field": "data ->> ${n}",
    # The formula guard: text (only text: -5 is a number) starting with = + - @ tab or CR,
    # tested by the code point of the first character (ascii()), the cheapest test there is.
    "guarded": (
        "CASE WHEN ascii(data ->> ${n}) IN (61, 43, 45, 64, 9, 13)"
        " AND jsonb_typeof(data -> ${n}) = 'string' THEN '''' || (data ->> ${n}) ELSE data ->> ${n} END"
    ),
}
# asyncpg's copy_from_query wraps it in COPY (...) TO STDOUT, with the parameters inlined as
# literals quoted by the server.
CSV_RECORDS = "SELECT {cells} FROM tool_records" + FILTERED_RECORDS_WHERE + "ORDER BY {order}"
SET_TIME_ZONE = "SELECT set_config('TimeZone', $1, true), set_config('DateStyle', 'ISO, YMD', true)"

# Sort keys: the record's own columns by name, any other field as data -> $n.
SORT_COLUMNS = {"record_id": "record_id", "created_at": "created_at"}
SORT_FIELD = "data -> ${param}"
SORT_DIRECTIONS = {False: "ASC NULLS LAST", True: "DESC NULLS LAST"}

ASSET_IDS = "SELECT asset_id FROM tool_assets WHERE tool_id = $1 ORDER BY asset_id"
ASSET = "SELECT path, content_type, content FROM tool_assets WHERE asset_id = $1"


@dataclass(frozen=True)
class RecordQuery:
    """Which records an export reads, and in which order."""

    created_from: datetime | None = None
    created_to: datetime | None = None
    equals: Mapping[str, Any] = field(default_factory=dict)  # field -> JSON value
    sort: Sequence[tuple[str, bool]] = ()  # (field or record column, descending)


def _tool(row: asyncpg.Record | Mapping[str, Any]) -> Tool:
    metadata = row["tool_metadata"]
    return Tool(
        tool_id=row["tool_id"],
        name=row["tool_name"],
        type=row["tool_type"],
        metadata=json.loads(metadata) if isinstance(metadata, str) else dict(metadata),
        owner_id=row["owner_id"],
        updated_at=row["updated_at"].isoformat(),
    )


def claimed_tool(row: asyncpg.Record) -> Tool | None:
    """The tool of a row from jobs.CLAIM (its tool_* columns); None if the tool is gone."""
    if row["tool_type"] is None:
        return None
    return _tool(
        {
            "tool_id": row["tool_id"],
            "tool_name": row["tool_name"],
            "tool_type": row["tool_type"],
            "tool_metadata": row["tool_metadata"],
            "owner_id": row["tool_owner_id"],
            "updated_at": row["tool_updated_at"],
        }
    )


async def get_tool(conn: Executor, tool_id: UUID) -> Tool | None:
    row = await conn.fetchrow(GET_TOOL, tool_id)
    return _tool(row) if row else None


async def get_tool_for_user(conn: Executor, tool_id: UUID, user_id: UUID) -> tuple[Tool | None, bool]:
    """(the tool or None, whether the user exists; False too when the tool doesn't)."""
    row = await conn.fetchrow(GET_TOOL_FOR_USER, tool_id, user_id)
    return (_tool(row), bool(row["user_exists"])) if row else (None, False)


async def count_records(conn: Executor, tool_id: UUID) -> int:
    return int(await conn.fetchval(COUNT_RECORDS, tool_id))


async def stream_records(
    pool: asyncpg.Pool, tool_id: UUID, batch_size: int = 5000
) -> AsyncIterator[list[asyncpg.Record]]:
    """Records of a tool in id order, in batches, never all in memory."""
    last = 0
    while True:
        async with pool.acquire() as conn:
            rows = await conn.fetch(RECORDS_BATCH, tool_id, last, batch_size)
        if not rows:
            return
        yield rows
        last = rows[-1]["record_id"]


def _order_by(sort: Sequence[tuple[str, bool]], first_param: int) -> tuple[str, list[str]]:
    """ORDER BY text from fixed fragments, and the field names it takes as parameters."""
    terms, params = [], []
    for name, descending in sort:
        if name in SORT_COLUMNS:
            expr = SORT_COLUMNS[name]
        else:
            params.append(name)
            expr = SORT_FIELD.format(param=first_param + len(params) - 1)
        terms.append(f"{expr} {SORT_DIRECTIONS[descending]}")
    if "record_id" not in (name for name, _ in sort):
        terms.append("record_id")  # ties in a stable order
    return ", ".join(terms), params


def _filtered(tool_id: UUID, query: RecordQuery) -> tuple[tuple[Any, ...], str, list[str]]:
    """Parameters $1-$5 of FILTERED_RECORDS_WHERE, the ORDER BY text and its parameters ($6...)."""
    names = list(query.equals)
    values = [json.dumps(v) for v in query.equals.values()]
    order, sort_params = _order_by(query.sort, first_param=6)
    return (tool_id, query.created_from, query.created_to, names, values), order, sort_params


@asynccontextmanager
async def open_records(
    pool: asyncpg.Pool, tool_id: UUID, query: RecordQuery, *, batch_size: int = 2000
) -> AsyncIterator[tuple[int, AsyncIterator[list[asyncpg.Record]]]]:
    """(count, batches) of the records `query` selects, both from one snapshot.

    Rows come through a server-side cursor in a read-only repeatable-read transaction, so
    the count matches the rows and memory holds one batch whatever the sort. Each row has
    record_id, created_at and data (the jsonb as text).
    """
    filters, order, sort_params = _filtered(tool_id, query)
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        total = int(await conn.fetchval(COUNT_FILTERED_RECORDS, *filters))
        cursor = await conn.cursor(SELECT_FILTERED_RECORDS.format(order=order), *filters, *sort_params)

        async def batches() -> AsyncIterator[list[asyncpg.Record]]:
            while rows := await cursor.fetch(batch_size):
                yield rows

        yield total, batches()


CopyOutput = Callable[[bytes], Coroutine[Any, Any, None]]


@asynccontextmanager
async def records_csv(
    pool: asyncpg.Pool, tool_id: UUID, query: RecordQuery, cells: Sequence[tuple[str, str]], time_zone: str
) -> AsyncIterator[tuple[int, Callable[[CopyOutput], Awaitable[int]]]]:
    """(count, copy) of the records `query` selects, from one snapshot, as open_records.

    `cells` are (CSV_CELLS key, field name) pairs. `await copy(output)` streams the rows as
    CSV (no header, LF after each record) to `output` in chunks and returns how many it sent.
    """
    filters, order, sort_params = _filtered(tool_id, query)
    params: list[Any] = [*filters, *sort_params]
    texts = []
    for kind, name in cells:
        if "{n}" in CSV_CELLS[kind]:
            params.append(name)
            texts.append(CSV_CELLS[kind].format(n=len(params)))
        else:
            texts.append(CSV_CELLS[kind])
    if len(texts) == 1:  # a lone null would be a blank line, which readers skip: write ""
        texts[0] = f"coalesce({texts[0]}, '')"
    sql = CSV_RECORDS.format(cells=", ".join(texts), order=order)
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        await conn.execute(SET_TIME_ZONE, time_zone)
        total = int(await conn.fetchval(COUNT_FILTERED_RECORDS, *filters))

        async def copy(output: CopyOutput) -> int:
            status = await conn.copy_from_query(sql, *params, output=output, format="csv")
            return int(status.split()[-1])  # "COPY <rows>"

        yield total, copy


async def iter_assets(pool: asyncpg.Pool, tool_id: UUID) -> AsyncIterator[tuple[str, str, bytes]]:
    """(path, content_type, content) of each asset, one asset in memory at a time."""
    async with pool.acquire() as conn:
        ids = [r["asset_id"] for r in await conn.fetch(ASSET_IDS, tool_id)]
    for asset_id in ids:
        async with pool.acquire() as conn:
            row = await conn.fetchrow(ASSET, asset_id)
        if row is not None:
            yield row["path"], row["content_type"], bytes(row["content"])


def record_data(row: asyncpg.Record) -> dict[str, Any]:
    """The record's jsonb data as a dict."""
    return dict(json.loads(row["data"]))
