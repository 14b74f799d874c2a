"""A message whose processing kills the worker every time: dead-lettered after the limit,
its job `failed` with `delivery_limit`; after the cause is fixed, a DLQ replay runs it."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path
from uuid import UUID

import asyncpg

from service.config import Settings
from service.dlq.letters import Filter, listing
from tests.support.api import api_client
from tests.support.data import create_tool, create_user
from tests.support.jobs import submit, terminal_messages, wait_status
from tests.support.processes import REPO, free_port, settings_env
from tests.support.rabbit import queue_depth, topology

LIMIT = 3


def _crashing(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "strategy_modules": "tests.support.crashing",
            "delivery_limit": LIMIT,
            "lease_seconds": 1.0,
            "heartbeat_seconds": 0.3,
        }
    )


async def _supervise(settings: Settings, pool: asyncpg.Pool, job_id: UUID, tmp_path: Path) -> int:
    """Run one worker at a time, restarting it whenever it dies, until the job is terminal.

    Returns how many times the worker died.
    """
    deaths = 0
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        env = settings_env(settings, metrics_port=free_port())
        log = (tmp_path / f"worker{deaths}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "worker"], env=env, cwd=REPO, stdout=log, stderr=log
        )
        try:
            while proc.poll() is None:
                status = await pool.fetchval("SELECT status::text FROM export_jobs WHERE job_id = $1", job_id)
                if status in ("failed", "rolled_back", "completed"):
                    return deaths
                await asyncio.sleep(0.1)
            assert proc.returncode == -signal.SIGKILL, (tmp_path / f"worker{deaths}.log").read_text()
            deaths += 1
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
            log.close()
    raise AssertionError(f"job {job_id} never finished; the worker died {deaths} times")


async def _job_that_kills_its_worker(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path, tool_type: str
) -> tuple[UUID, UUID, int]:
    user = await create_user(pool, ["exporter"])
    tool = await create_tool(
        pool, user, tool_type, metadata={"journal": str(tmp_path / "journal"), "crash": True}
    )
    async with api_client(settings) as client:
        job_id = await submit(client, settings, user, tool)
        deaths = await _supervise(settings, pool, job_id, tmp_path)
    return job_id, tool, deaths


def _runs(tmp_path: Path, step: str) -> int:
    return (tmp_path / "journal").read_text().split().count(step)


async def test_a_message_that_kills_every_worker_is_dead_lettered_after_the_limit(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    settings = _crashing(settings)
    job_id, tool, deaths = await _job_that_kills_its_worker(settings, pool, tmp_path, "crash-first")

    # Each of LIMIT deliveries killed a worker; the next one was refused without running.
    assert deaths == LIMIT
    assert _runs(tmp_path, "boom") == LIMIT
    row = await wait_status(pool, job_id, timeout=1)
    assert (row["status"], row["error_code"], row["deliveries"]) == ("failed", "delivery_limit", LIMIT + 1)
    assert await terminal_messages(pool, job_id) == ["export.failed"]

    depth, letters = await listing(settings, Filter(), None)
    assert depth == 1
    [letter] = letters
    assert (letter.job_id, letter.reason, letter.deliveries) == (str(job_id), "delivery_limit", LIMIT + 1)
    assert await queue_depth(settings.amqp_url, topology(settings).requests) == 0

    # The operator fixes the cause and replays: the job runs again as attempt 2 and completes.
    await pool.execute(
        "UPDATE tool_registry SET tool_metadata = tool_metadata || '{\"crash\": false}' WHERE tool_id = $1",
        tool,
    )
    env = settings_env(settings)
    replay = subprocess.run(
        [sys.executable, "-m", "service.cli", "dlq", "replay", "--job-id", str(job_id)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert "reset to attempt 2" in replay.stdout
    worker_env = settings_env(settings, metrics_port=free_port())
    with (tmp_path / "after.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "worker"], env=worker_env, cwd=REPO, stdout=log, stderr=log
        )
        try:
            row = await wait_status(pool, job_id, {"completed"}, timeout=30)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(20)
    assert row["attempt"] == 2
    assert await terminal_messages(pool, job_id) == ["export.failed", "export.completed"]
    assert await queue_depth(settings.amqp_url, topology(settings).dead) == 0


async def test_the_limit_holds_when_the_worker_dies_after_a_completed_step(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    settings = _crashing(settings)
    job_id, _, deaths = await _job_that_kills_its_worker(settings, pool, tmp_path, "crash-later")

    assert deaths == LIMIT
    row = await wait_status(pool, job_id, timeout=1)
    assert row["error_code"] == "delivery_limit"
    assert row["status"] in ("failed", "rolled_back")
    _, letters = await listing(settings, Filter(), None)
    assert [(letter.job_id, letter.reason) for letter in letters] == [(str(job_id), "delivery_limit")]
