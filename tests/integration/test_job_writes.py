"""How a running job's bookkeeping is written: which writes wait for the WAL flush, and
which steps are announced before they end."""

from __future__ import annotations

from pathlib import Path
from uuid import uuid4

import asyncpg

from service import jobs
from service.config import Settings
from service.messages import job_event
from tests.support.api import api_client
from tests.support.jobs import scripted, scripted_tool, submit, wait_status
from tests.support.worker import worker_running


async def _job(pool: asyncpg.Pool, tmp_path: Path) -> tuple[object, object]:
    user, tool = await scripted_tool(pool, tmp_path / "journal")
    job_id = uuid4()
    await pool.execute(jobs.INSERT_JOB, job_id, tool, user, "package", {}, 2, None, None, 1)
    return job_id, user


async def _commit_mode(conn: asyncpg.Connection, sql: str, *args: object) -> str:
    """synchronous_commit as the transaction running `sql` would commit with it."""
    async with conn.transaction():
        await conn.execute(sql, *args)
        mode: str = await conn.fetchval("SHOW synchronous_commit")
        return mode


async def test_running_writes_skip_the_flush_and_terminal_ones_wait_for_it(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    job_id, user = await _job(pool, tmp_path)
    worker = "test-worker"
    async with pool.acquire() as conn:
        assert await _commit_mode(conn, jobs.CLAIM, job_id, 1, worker, 30.0, user) == "off"
        start = (job_id, worker, 1, 1, "Running s1", "s1", 2, 0.2)
        assert await _commit_mode(conn, jobs.START_STEP, *start) == "off"
        assert await _commit_mode(conn, jobs.PROGRESS, job_id, worker, 30) == "off"
        ended = (job_id, worker, 1, 1, "s1", 0.01, True)
        assert await _commit_mode(conn, jobs.STEP_DONE, *ended, 50) == "off"
        # Outside those statements the session keeps the server's default.
        assert await conn.fetchval("SHOW synchronous_commit") == "on"
        row = await conn.fetchrow(jobs.GET_JOB, job_id)
        done = {**row, "status": "completed", "updated_at": None}
        last = (job_id, worker, 1, 2, "s2", 0.01, False)
        package = ("k", 1, "0" * 64)
        assert await _commit_mode(conn, jobs.COMPLETE, *last, *package, *job_event(done)) == "on"
    assert (
        await pool.fetchval("SELECT status::text FROM export_jobs WHERE job_id = $1", job_id) == "completed"
    )


async def test_every_step_is_recorded_once_whether_its_start_was_announced_or_not(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    settings = scripted(settings)
    user, tool = await scripted_tool(pool, tmp_path / "journal", {"s2": {"sleep": 0.6}})
    async with api_client(settings) as client, worker_running(settings):
        job_id = await submit(client, settings, user, tool)
        assert (await wait_status(pool, job_id))["status"] == "completed"
    steps = await pool.fetch(
        "SELECT position, status, tries, finished_at - started_at AS took FROM export_job_steps "
        "WHERE job_id = $1 ORDER BY position",
        job_id,
    )
    assert [(s["position"], s["status"], s["tries"]) for s in steps] == [
        (p, "completed", 1) for p in range(1, 5)
    ]
    assert steps[1]["took"].total_seconds() >= 0.6  # announced (orchestrator.START_DELAY): its real start
    assert all(s["took"].total_seconds() >= 0 for s in steps)
    announced = await pool.fetch(
        "SELECT detail FROM export_job_events WHERE job_id = $1 AND kind = 'step_completed'", job_id
    )
    assert [e["detail"]["step"] for e in announced] == ["s1", "s2", "s3"]
