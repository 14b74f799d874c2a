"""The tool registry and tool content (records, assets): the data exports read.

All SQL on tool_registry, tool_records and tool_assets lives here.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

import asyncpg

from service.db import Executor
from service.steps import Tool

__all__ = ["count_records", "get_tool", "iter_assets", "stream_records"]

GET_TOOL = """
SELECT tool_id, tool_name, tool_type, tool_metadata, owner_id, updated_at
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

ASSET_IDS = "SELECT asset_id FROM tool_assets WHERE tool_id = $1 ORDER BY asset_id"
ASSET = "SELECT path, content_type, content FROM tool_assets WHERE asset_id = $1"


def _tool(row: asyncpg.Record) -> Tool:
    metadata = row["tool_metadata"]
    return Tool(
        tool_id=row["tool_id"],
        name=row["tool_name"],
        type=row["tool_type"],
        metadata=json.loads(metadata) if isinstance(metadata, str) else dict(metadata),
        owner_id=row["owner_id"],
        updated_at=row["updated_at"].isoformat(),
    )


async def get_tool(conn: Executor, tool_id: UUID) -> Tool | None:
    row = await conn.fetchrow(GET_TOOL, tool_id)
    return _tool(row) if row else None


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
