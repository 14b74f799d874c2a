"""Live progress as Server-Sent Events: `progress` while the job runs, then its terminal event.

Each stream reads the job row every POLL_SECONDS (one primary-key lookup) and sends an
event only when something a person sees has changed. The stream ends after the terminal
event (`completed`, `failed`, `cancelled` or `rolled_back`); a failed job whose completed
steps are still being undone is followed until it is rolled back (or ROLLBACK_WAIT passes).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

import asyncpg
from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from service import jobs
from service.api.auth import Principal
from service.api.deps import PoolDep, PrincipalDep, SettingsDep, errors, visible_job
from service.api.downloads import public_job
from service.config import Settings

__all__ = ["format_event", "router"]

router = APIRouter(tags=["exports"])

POLL_SECONDS = 0.5
KEEPALIVE_SECONDS = 15.0
ROLLBACK_WAIT = 30.0
RECONNECT_MS = 2000
FINAL = ("completed", "cancelled", "rolled_back")


def format_event(event: str, data: dict[str, Any], event_id: int | None = None) -> bytes:
    """One SSE frame; JSON never contains a raw newline, so `data:` stays one line."""
    lines = [f"event: {event}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append("data: " + json.dumps(data, separators=(",", ":"), default=str))
    return ("\n".join(lines) + "\n\n").encode()


def _visible_state(job: dict[str, Any]) -> tuple[Any, ...]:
    return (
        job["status"],
        job["attempt"],
        job["steps_completed"],
        job["progress_percentage"],
        job["current_step"],
    )


async def _stream(
    pool: asyncpg.Pool, settings: Settings, principal: Principal, first: asyncpg.Record
) -> AsyncIterator[bytes]:
    yield f"retry: {RECONNECT_MS}\n\n".encode()
    row: asyncpg.Record | None = first
    last: tuple[Any, ...] | None = None
    sequence = 0
    quiet_since = time.monotonic()
    failed_since: float | None = None
    while row is not None:
        job = public_job(row, settings, principal).model_dump(mode="json")
        state = _visible_state(job)
        status = job["status"]
        terminal = status in FINAL
        if status == "failed":
            failed_since = failed_since or time.monotonic()
            undoing = row["worker_id"] is not None  # its worker is still undoing steps
            terminal = not undoing or time.monotonic() - failed_since > ROLLBACK_WAIT
        if terminal:
            yield format_event(status, job, sequence + 1)
            return
        if state != last:
            sequence += 1
            last = state
            quiet_since = time.monotonic()
            yield format_event("progress", job, sequence)
        elif time.monotonic() - quiet_since >= KEEPALIVE_SECONDS:
            quiet_since = time.monotonic()
            yield b": keepalive\n\n"  # keeps proxies from closing an idle stream
        await asyncio.sleep(POLL_SECONDS)
        row = await jobs.get_job(pool, first["job_id"])
    # Removed while watched (retention): say so rather than hang up without a reason.
    yield format_event("gone", {"job_id": str(first["job_id"])}, sequence + 1)


@router.get(
    "/v1/exports/{job_id}/events",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
            "description": "`progress` events, then one terminal event named after the status",
        },
        **errors(401, 404, 422),
    },
)
async def job_events(
    job_id: UUID, principal: PrincipalDep, pool: PoolDep, settings: SettingsDep
) -> StreamingResponse:
    """Follow a job live (Server-Sent Events); the stream ends after the terminal event."""
    row = await visible_job(pool, principal, job_id)  # 404 before the stream starts
    return StreamingResponse(
        _stream(pool, settings, principal, row),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
