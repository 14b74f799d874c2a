"""The orchestrator's guarantees, proven by injecting failures through the scripted strategy."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg
from prometheus_client import REGISTRY

from service import jobs
from service.config import Settings
from service.storage import open_storage
from tests.support.api import api_client
from tests.support.jobs import events, scripted, scripted_tool, submit, terminal_messages, wait_status
from tests.support.scripted import read_journal
from tests.support.worker import worker_running


def _retries(step: str) -> float:
    return (
        REGISTRY.get_sample_value("exporter_step_retries_total", {"strategy": "scripted", "step": step})
        or 0.0
    )


async def test_transient_failures_are_retried_until_the_step_succeeds(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    settings = scripted(settings)
    journal = tmp_path / "journal"
    user, tool = await scripted_tool(pool, journal, {"s2": {"fail_times": 2, "error": "transient"}})
    before = _retries("s2")
    async with api_client(settings) as client, worker_running(settings):
        job_id = await submit(client, settings, user, tool)
        row = await wait_status(pool, job_id)
    assert row["status"] == "completed"
    assert read_journal(journal) == ["run:s1", "run:s2", "run:s2", "run:s2", "run:s3", "run:s4"]
    step = await pool.fetchrow(
        "SELECT tries, status FROM export_job_steps WHERE job_id = $1 AND position = 2", job_id
    )
    assert (step["tries"], step["status"]) == (3, "completed")
    assert (await events(pool, job_id)).count("retry") == 2
    assert _retries("s2") - before == 2
    assert row["progress_percentage"] == 100 and row["steps_completed"] == 4


async def test_retries_stop_at_the_attempt_limit(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    settings = scripted(settings, step_max_attempts=3)
    journal = tmp_path / "journal"
    user, tool = await scripted_tool(pool, journal, {"s1": {"fail_times": 10, "error": "transient"}})
    async with api_client(settings) as client, worker_running(settings):
        job_id = await submit(client, settings, user, tool)
        row = await wait_status(pool, job_id)
    assert read_journal(journal) == ["run:s1"] * 3 + ["undo:s1"]
    assert row["status"] == "failed"  # nothing completed, so nothing to roll back
    assert row["error_code"] == "transient_failure"


async def test_permanent_failure_undoes_completed_steps_in_reverse(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    settings = scripted(settings)
    journal = tmp_path / "journal"
    user, tool = await scripted_tool(pool, journal, {"s3": {"fail_times": 1, "error": "permanent"}})
    async with api_client(settings) as client, worker_running(settings):
        job_id = await submit(client, settings, user, tool)
        row = await wait_status(pool, job_id)
    assert row["status"] == "rolled_back"
    assert row["error_code"] == "scripted_failure"
    # The failed step cleans up after itself first, then the completed ones in reverse.
    assert read_journal(journal) == ["run:s1", "run:s2", "run:s3", "undo:s3", "undo:s2", "undo:s1"]
    assert not (settings.work_dir / f"{job_id}-1").exists()
    assert await terminal_messages(pool, job_id) == ["export.failed"]
    kinds = await events(pool, job_id)
    assert kinds.index("failed") < kinds.index("rollback")


async def test_an_undo_that_raises_does_not_stop_the_others(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    settings = scripted(settings)
    journal = tmp_path / "journal"
    user, tool = await scripted_tool(
        pool, journal, {"s2": {"undo_error": True}, "s3": {"fail_with": "disk on fire"}}
    )
    async with api_client(settings) as client, worker_running(settings):
        job_id = await submit(client, settings, user, tool)
        row = await wait_status(pool, job_id)
    assert row["status"] == "rolled_back"
    assert row["error_code"] == "step_failed" and "disk on fire" in row["error_message"]
    assert read_journal(journal)[-2:] == ["undo:s2", "undo:s1"]
    steps = {
        r["position"]: r["status"]
        for r in await pool.fetch("SELECT position, status FROM export_job_steps WHERE job_id = $1", job_id)
    }
    assert steps == {1: "undone", 2: "undo_failed", 3: "failed"}
    assert "undo_failed" in await events(pool, job_id)


async def test_a_step_past_its_timeout_fails_the_job(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    settings = scripted(settings, step_timeout_seconds=0.5)
    journal = tmp_path / "journal"
    user, tool = await scripted_tool(pool, journal, {"s2": {"sleep": 30}})
    began = time.monotonic()
    async with api_client(settings) as client, worker_running(settings):
        job_id = await submit(client, settings, user, tool)
        row = await wait_status(pool, job_id)
    assert time.monotonic() - began < 15
    assert row["status"] == "rolled_back"
    assert row["error_code"] == "step_timeout"
    assert "'s2'" in row["error_message"] and "timed out after 0.5" in row["error_message"]


async def test_cancelling_a_pending_job_runs_nothing(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    settings = scripted(settings)
    journal = tmp_path / "journal"
    user, tool = await scripted_tool(pool, journal)
    async with api_client(settings) as client:
        job_id = await submit(client, settings, user, tool)
        async with pool.acquire() as conn, conn.transaction():
            cancelled = await jobs.request_cancel(conn, job_id)
        assert cancelled is not None and cancelled["status"] == "cancelled"
        async with worker_running(settings):
            await asyncio.sleep(1.5)  # the message arrives and is dropped
    row = await wait_status(pool, job_id)
    assert row["status"] == "cancelled"
    assert read_journal(journal) == []
    assert await pool.fetchval("SELECT count(*) FROM export_job_steps WHERE job_id = $1", job_id) == 0


async def test_cancelling_mid_step_interrupts_it_and_undoes(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    settings = scripted(settings)
    journal = tmp_path / "journal"
    user, tool = await scripted_tool(pool, journal, {"s3": {"sleep": 60}})
    async with api_client(settings) as client, worker_running(settings):
        job_id = await submit(client, settings, user, tool)
        await _wait_for_step(pool, job_id, "Running s3")
        async with pool.acquire() as conn, conn.transaction():
            requested = await jobs.request_cancel(conn, job_id)
        assert requested is not None and requested["status"] == "cancelling"
        began = time.monotonic()
        row = await wait_status(pool, job_id, timeout=10)
        elapsed = time.monotonic() - began
    assert row["status"] == "cancelled"
    assert elapsed < 2, f"cancel took {elapsed:.2f}s"
    assert read_journal(journal) == ["run:s1", "run:s2", "run:s3", "undo:s3", "undo:s2", "undo:s1"]
    assert await terminal_messages(pool, job_id) == ["export.cancelled"]


async def test_cancel_racing_completion_ends_in_exactly_one_terminal_state(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    settings = scripted(settings)
    journal = tmp_path / "journal"
    user, tool = await scripted_tool(pool, journal, {"s4": {"sleep": 0.05}})
    outcomes = []
    async with api_client(settings) as client, worker_running(settings):
        for delay in (0.0, 0.05, 0.1, 0.15, 0.2, 0.3):
            job_id = await submit(client, settings, user, tool)
            # s4 ends before its start would be announced (START_DELAY): wait for s3's end.
            await _wait_for_steps_completed(pool, job_id, 3)
            await asyncio.sleep(delay)
            async with pool.acquire() as conn, conn.transaction():
                await jobs.request_cancel(conn, job_id)
            row = await wait_status(pool, job_id)
            outcomes.append(row["status"])
            assert row["status"] in {"completed", "cancelled"}
            expected = "export.completed" if row["status"] == "completed" else "export.cancelled"
            assert await terminal_messages(pool, job_id) == [expected]
            has_package = await open_storage(settings).exists(f"{job_id}/scripted.txt")
            assert has_package == (row["status"] == "completed")
    assert "cancelled" in outcomes


async def test_duplicate_deliveries_run_the_job_once(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    settings = scripted(settings, worker_concurrency=4)
    journal = tmp_path / "journal"
    user, tool = await scripted_tool(pool, journal, {"s2": {"sleep": 0.5}})
    async with api_client(settings) as client:
        job_id = await submit(client, settings, user, tool)
        # The same message three times more, as a crashed relay or a redelivery would.
        await pool.execute(
            "INSERT INTO export_outbox (exchange, routing_key, message_id, body)"
            " SELECT exchange, routing_key, message_id, body FROM export_outbox, generate_series(1, 3)"
        )
        async with worker_running(settings), worker_running(settings):
            row = await wait_status(pool, job_id)
            await asyncio.sleep(1)
    assert row["status"] == "completed"
    assert read_journal(journal) == ["run:s1", "run:s2", "run:s3", "run:s4"]
    assert await terminal_messages(pool, job_id) == ["export.completed"]


async def test_progress_is_visible_while_a_step_runs(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    settings = scripted(settings)
    journal = tmp_path / "journal"
    user, tool = await scripted_tool(pool, journal, {"s3": {"sleep": 1.0}})
    async with api_client(settings) as client, worker_running(settings):
        job_id = await submit(client, settings, user, tool)
        await _wait_for_step(pool, job_id, "Running s3")
        row = await pool.fetchrow(
            "SELECT * FROM export_job_steps WHERE job_id = $1 ORDER BY position", job_id
        )
        job = await pool.fetchrow(
            "SELECT steps_completed, progress_percentage FROM export_jobs WHERE job_id = $1", job_id
        )
        assert (job["steps_completed"], job["progress_percentage"]) == (2, 50)
        assert row["status"] == "completed"
        assert (await wait_status(pool, job_id))["status"] == "completed"


async def _wait_for_step(pool: asyncpg.Pool, job_id: object, description: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (
            await pool.fetchval("SELECT current_step FROM export_jobs WHERE job_id = $1", job_id)
            == description
        ):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"step {description!r} never started")


async def _wait_for_steps_completed(
    pool: asyncpg.Pool, job_id: object, count: int, timeout: float = 15
) -> None:
    deadline = time.monotonic() + timeout
    query = "SELECT steps_completed FROM export_jobs WHERE job_id = $1"
    while time.monotonic() < deadline:
        if await pool.fetchval(query, job_id) >= count:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"{count} steps never completed")


async def test_a_worker_runs_at_most_its_concurrency(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    settings = scripted(settings, worker_concurrency=2)
    journal = tmp_path / "journal"
    user, tool = await scripted_tool(pool, journal, {"s2": {"sleep": 0.8}})
    peak = 0
    async with api_client(settings) as client, worker_running(settings):
        ids = [await submit(client, settings, user, tool) for _ in range(5)]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            running = await pool.fetchval("SELECT count(*) FROM export_jobs WHERE status = 'in_progress'")
            peak = max(peak, running)
            if await pool.fetchval("SELECT count(*) FROM export_jobs WHERE status = 'completed'") == 5:
                break
            await asyncio.sleep(0.02)
    assert peak == 2
    assert {(await wait_status(pool, job_id))["status"] for job_id in ids} == {"completed"}
