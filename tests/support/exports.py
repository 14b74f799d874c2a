"""Job rows in any status, written straight to the table, for API tests that need history."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

import asyncpg

from service.config import Settings
from service.storage import LocalStorage, open_storage

INSERT = """
INSERT INTO export_jobs (job_id, tool_id, user_id, status, format, options, steps_total,
                         steps_completed, progress_percentage, current_step, package_path,
                         package_size_bytes, package_sha256, created_at, completed_at, attempt,
                         error_code)
VALUES ($1, $2, $3, $4::text::export_job_status, $5, $6, 5, $7, $8, $9, $10, $11, $12, coalesce($13, now()),
        CASE WHEN $4::text IN ('completed', 'failed', 'cancelled', 'rolled_back') THEN now() END, $14, $15)
RETURNING *
"""


async def insert_job(
    pool: asyncpg.Pool,
    user: UUID,
    tool: UUID,
    status: str = "pending",
    *,
    created_at: datetime | None = None,
    fmt: str = "bundle",
    options: dict[str, Any] | None = None,
    progress: int = 0,
    package: tuple[str, bytes] | None = None,
    attempt: int = 1,
) -> UUID:
    job_id = uuid4()
    key = size = sha = None
    if package is not None:
        key = f"{job_id}/{package[0]}"
        size, sha = len(package[1]), hashlib.sha256(package[1]).hexdigest()
    steps = 5 if status == "completed" else progress * 5 // 100
    await pool.fetchrow(
        INSERT,
        job_id,
        tool,
        user,
        status,
        fmt,
        options or {},
        steps,
        100 if status == "completed" else progress,
        "Writing records" if status == "in_progress" else None,
        key,
        size,
        sha,
        created_at,
        attempt,
        "step_failed" if status in ("failed", "rolled_back") else None,
    )
    return job_id


async def completed_job(
    pool: asyncpg.Pool, settings: Settings, user: UUID, tool: UUID, name: str, content: bytes
) -> UUID:
    """A completed job whose package really is in the configured (local) storage."""
    job_id = await insert_job(pool, user, tool, "completed", package=(name, content))
    storage = open_storage(settings)
    assert isinstance(storage, LocalStorage)
    path = storage.path(f"{job_id}/{name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return job_id
