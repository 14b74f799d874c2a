"""Submitting jobs and waiting on them in tests."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import httpx

from service.config import Settings
from tests.support.api import bearer
from tests.support.data import create_tool, create_user

TERMINAL = {"completed", "failed", "rolled_back", "cancelled"}


def scripted(settings: Settings, **overrides: Any) -> Settings:
    """Settings with the test-only scripted strategy registered."""
    return settings.model_copy(update={"strategy_modules": "tests.support.scripted", **overrides})


async def scripted_tool(
    pool: asyncpg.Pool, journal: Path, steps: dict[str, Any] | None = None
) -> tuple[UUID, UUID]:
    user = await create_user(pool, ["exporter"])
    tool = await create_tool(pool, user, "scripted", metadata={"journal": str(journal), "steps": steps or {}})
    return user, tool


async def submit(
    client: httpx.AsyncClient, settings: Settings, user: UUID, tool: UUID, fmt: str = "package"
) -> UUID:
    response = await client.post(
        "/v1/exports",
        json={"tool_id": str(tool), "format": fmt},
        headers=bearer(settings, user, ["exporter"]),
    )
    assert response.status_code == 202, response.text
    return UUID(response.json()["job_id"])


async def wait_status(
    pool: asyncpg.Pool, job_id: UUID, statuses: set[str] = TERMINAL, timeout: float = 30
) -> asyncpg.Record:
    deadline = time.monotonic() + timeout
    row = None
    while time.monotonic() < deadline:
        row = await pool.fetchrow(
            "SELECT *, status::text AS status FROM export_jobs WHERE job_id = $1", job_id
        )
        # A `failed` job whose worker is still on it is on its way to `rolled_back`.
        settled = row is not None and (row["status"] not in TERMINAL or row["worker_id"] is None)
        if row is not None and row["status"] in statuses and settled:
            return row
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} not in {statuses} after {timeout}s: {dict(row) if row else None}")


async def events(pool: asyncpg.Pool, job_id: UUID) -> list[str]:
    rows = await pool.fetch("SELECT kind FROM export_job_events WHERE job_id = $1 ORDER BY event_id", job_id)
    return [r["kind"] for r in rows]


async def terminal_messages(pool: asyncpg.Pool, job_id: UUID) -> list[str]:
    rows = await pool.fetch(
        "SELECT routing_key FROM export_outbox WHERE exchange = 'events' AND body->>'job_id' = $1 ORDER BY outbox_id",
        str(job_id),
    )
    return [r["routing_key"] for r in rows]
