"""Test data: users and tools inserted with plain SQL."""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

import asyncpg


async def create_user(pool: asyncpg.Pool, roles: list[str], email: str | None = None) -> UUID:
    from uuid import uuid4

    email = email or f"{uuid4().hex[:10]}@example.com"
    return await pool.fetchval(  # type: ignore[no-any-return]
        "INSERT INTO users (email, roles) VALUES ($1, $2) RETURNING user_id", email, roles
    )


async def create_tool(
    pool: asyncpg.Pool,
    owner: UUID,
    tool_type: str = "forms",
    *,
    name: str = "Customer survey",
    metadata: dict[str, Any] | None = None,
    records: list[dict[str, Any]] | None = None,
    assets: list[tuple[str, str, bytes]] | None = None,
) -> UUID:
    tool_id: UUID = await pool.fetchval(
        "INSERT INTO tool_registry (tool_name, tool_type, owner_id, tool_metadata)"
        " VALUES ($1, $2, $3, $4) RETURNING tool_id",
        name,
        tool_type,
        owner,
        metadata or {"fields": [{"name": "email", "type": "email"}]},
    )
    if records:
        await pool.executemany(
            "INSERT INTO tool_records (tool_id, data) VALUES ($1, $2)",
            [(tool_id, json.loads(json.dumps(r))) for r in records],
        )
    for path, content_type, content in assets or []:
        await pool.execute(
            "INSERT INTO tool_assets (tool_id, path, content_type, content) VALUES ($1, $2, $3, $4)",
            tool_id,
            path,
            content_type,
            content,
        )
    return tool_id
