"""Another service publishes export.requested.v1 straight to the exchange, without the API:
the worker creates the job row once, and the same message twice is one job and one run."""

from __future__ import annotations

import asyncio
from pathlib import Path
from uuid import uuid4

import asyncpg

from service.config import Settings
from tests.support.jobs import events, scripted, scripted_tool, terminal_messages, wait_status
from tests.support.rabbit import publish_raw, queue_depth, request_body, topology
from tests.support.scripted import read_journal
from tests.support.worker import worker_running

STEPS = ["run:s1", "run:s2", "run:s3", "run:s4"]


async def test_a_directly_published_request_creates_its_job_and_runs_it(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    settings = scripted(settings)
    journal = tmp_path / "journal"
    user, tool = await scripted_tool(pool, journal)
    job_id = uuid4()
    async with worker_running(settings):
        body = request_body(job_id, tool, user)
        await publish_raw(settings.amqp_url, topology(settings).exchange, body, message_id=str(job_id))
        row = await wait_status(pool, job_id, timeout=20)

    assert (row["status"], row["user_id"], row["tool_id"], row["attempt"]) == ("completed", user, tool, 1)
    assert (await events(pool, job_id))[0] == "created"
    source = await pool.fetchval(
        "SELECT detail->>'source' FROM export_job_events WHERE job_id = $1 AND kind = 'created'", job_id
    )
    assert source == "message"
    assert read_journal(journal) == STEPS


async def test_the_same_message_published_twice_is_one_job_and_one_run(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    settings = scripted(settings)
    journal = tmp_path / "journal"
    # A slow step keeps the first run going while the duplicate arrives.
    user, tool = await scripted_tool(pool, journal, {"s2": {"sleep": 1.0}})
    job_id = uuid4()
    body = request_body(job_id, tool, user)
    async with worker_running(settings):
        for _ in range(2):
            await publish_raw(settings.amqp_url, topology(settings).exchange, body, message_id=str(job_id))
        row = await wait_status(pool, job_id, timeout=30)
        # ...and once more after it finished.
        await publish_raw(settings.amqp_url, topology(settings).exchange, body, message_id=str(job_id))
        await asyncio.sleep(1)
        for _ in range(100):  # the duplicates are acked (dropped), not left or requeued
            if await queue_depth(settings.amqp_url, topology(settings).requests) == 0:
                break
            await asyncio.sleep(0.1)

    assert row["status"] == "completed"
    assert await pool.fetchval("SELECT count(*) FROM export_jobs") == 1
    assert read_journal(journal) == STEPS
    assert (await events(pool, job_id)).count("created") == 1
    assert await terminal_messages(pool, job_id) == ["export.completed"]
    assert await queue_depth(settings.amqp_url, topology(settings).requests) == 0
    assert await queue_depth(settings.amqp_url, topology(settings).dead) == 0
