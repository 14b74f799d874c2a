"""Server-Sent Events: progress while the job moves, one terminal event, then the stream ends."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from uuid import UUID

import asyncpg
import pytest

from service.api import events
from service.config import Settings
from tests.support.api import api_client, bearer
from tests.support.data import create_tool, create_user
from tests.support.exports import insert_job


def parse(stream: str) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for frame in stream.split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in frame.splitlines() if ": " in line and not line.startswith(":")
        )
        if "event" in fields:
            found.append((fields["event"], json.loads(fields["data"])))
    return found


@pytest.fixture(autouse=True)
def fast_polling(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(events, "POLL_SECONDS", 0.05)


async def move(pool: asyncpg.Pool, job_id: UUID, *updates: str) -> None:
    for update in updates:
        await asyncio.sleep(0.3)
        await pool.execute(f"UPDATE export_jobs SET {update}, updated_at = now() WHERE job_id = $1", job_id)


async def test_progress_then_the_terminal_event_ends_the_stream(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    user = await create_user(pool, ["exporter"])
    tool = await create_tool(pool, user)
    job_id = await insert_job(pool, user, tool)
    async with api_client(settings, with_relay=False) as client:
        mover = asyncio.create_task(
            move(
                pool,
                job_id,
                "status = 'in_progress', current_step = 'Reading records'",
                "progress_percentage = 40, steps_completed = 2",
                "progress_percentage = 40, steps_completed = 2",  # nothing visible changed
                "status = 'completed', progress_percentage = 100, steps_completed = 5,"
                " package_path = 'x/y.zip', package_size_bytes = 1, package_sha256 = repeat('a', 64)",
            )
        )
        response = await asyncio.wait_for(
            client.get(f"/v1/exports/{job_id}/events", headers=bearer(settings, user, ["exporter"])), 15
        )
        await mover
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.text.startswith("retry: ")
    found = parse(response.text)
    kinds = [kind for kind, _ in found]
    assert kinds == ["progress", "progress", "progress", "completed"], kinds
    assert [data["status"] for _, data in found] == ["pending", "in_progress", "in_progress", "completed"]
    assert found[2][1]["progress_percentage"] == 40
    assert found[-1][1]["download_url"].startswith(f"/v1/downloads/{job_id}?")


async def test_a_failure_with_undo_pending_waits_for_rolled_back(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    user = await create_user(pool, ["exporter"])
    tool = await create_tool(pool, user)
    job_id = await insert_job(pool, user, tool, "failed")
    # A worker still on a failed job is undoing its steps: the job will be rolled_back.
    await pool.execute("UPDATE export_jobs SET worker_id = 'worker-1' WHERE job_id = $1", job_id)
    async with api_client(settings, with_relay=False) as client:
        mover = asyncio.create_task(move(pool, job_id, "status = 'rolled_back', worker_id = NULL"))
        response = await client.get(
            f"/v1/exports/{job_id}/events", headers=bearer(settings, user, ["exporter"])
        )
        await mover
    assert [kind for kind, _ in parse(response.text)] == ["progress", "rolled_back"]


async def test_a_finished_job_gets_its_terminal_event_at_once(settings: Settings, pool: asyncpg.Pool) -> None:
    user = await create_user(pool, ["exporter"])
    tool = await create_tool(pool, user)
    job_id = await insert_job(pool, user, tool, "failed")
    async with api_client(settings, with_relay=False) as client:
        response = await client.get(
            f"/v1/exports/{job_id}/events", headers=bearer(settings, user, ["exporter"])
        )
    found = parse(response.text)
    assert [kind for kind, _ in found] == ["failed"]
    assert found[0][1]["error_code"] == "step_failed"


def test_frames_are_one_line_of_json() -> None:
    frame = events.format_event("progress", {"current_step": "line one\nline two"}, 3).decode()
    assert frame.endswith("\n\n") and frame.count("\n") == 4
    assert frame.splitlines()[1] == "id: 3"
