"""Worker processes that die or are stopped mid-job: nothing lost, nothing redone."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import time
from pathlib import Path

import asyncpg

from service.config import Settings
from tests.support.api import api_client
from tests.support.jobs import events, scripted, scripted_tool, submit, terminal_messages, wait_status
from tests.support.processes import free_port, settings_env, start
from tests.support.scripted import read_journal


def _worker(settings: Settings, tmp_path: Path, name: str):  # type: ignore[no-untyped-def]
    port = free_port()
    env = settings_env(settings, metrics_port=port)
    return start(["worker"], env, f"http://127.0.0.1:{port}/readyz", tmp_path / f"{name}.log")


async def _wait_journal(journal: Path, line: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if line in read_journal(journal):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{line!r} never appeared in the journal: {read_journal(journal)}")


async def _kill_mid_step_then_resume(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path, *, lose_outputs: bool
) -> tuple[asyncpg.Record, list[str]]:
    """SIGKILL a worker during s3, start a second one; returns the final row and journal."""
    settings = scripted(settings, lease_seconds=2, heartbeat_seconds=0.5)
    journal = tmp_path / "journal"
    user, tool = await scripted_tool(pool, journal, {"s3": {"sleep": 3}})
    first = _worker(settings, tmp_path, "first")
    second = None
    try:
        async with api_client(settings) as client:
            job_id = await submit(client, settings, user, tool)
            await _wait_journal(journal, "run:s3")
            first.stop(signal.SIGKILL)
            assert first.popen.returncode == -signal.SIGKILL
            status = await pool.fetchval("SELECT status::text FROM export_jobs WHERE job_id = $1", job_id)
            assert status == "in_progress"
            if lose_outputs:  # as if the job resumed on another machine
                shutil.rmtree(settings.work_dir / f"{job_id}-1")
            second = _worker(settings, tmp_path, "second")
            row = await wait_status(pool, job_id, timeout=40)
    finally:
        first.stop(signal.SIGKILL)
        if second is not None:
            second.stop()
    assert row["status"] == "completed", second.log() if second else ""
    assert await terminal_messages(pool, job_id) == ["export.completed"]
    return row, read_journal(journal)


async def test_sigkill_mid_job_then_another_worker_resumes_without_redoing(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    row, journal = await _kill_mid_step_then_resume(settings, pool, tmp_path, lose_outputs=False)
    assert journal == ["run:s1", "run:s2", "run:s3", "run:s3", "run:s4"]
    assert row["deliveries"] == 2
    assert "resumed" in await events(pool, row["job_id"])


async def test_resume_starts_over_when_completed_outputs_are_gone(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    _, journal = await _kill_mid_step_then_resume(settings, pool, tmp_path, lose_outputs=True)
    assert journal == ["run:s1", "run:s2", "run:s3", "run:s1", "run:s2", "run:s3", "run:s4"]


async def test_sigterm_lets_the_running_job_finish(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    settings = scripted(settings, shutdown_grace_seconds=20)
    journal = tmp_path / "journal"
    user, tool = await scripted_tool(pool, journal, {"s2": {"sleep": 2}})
    worker = _worker(settings, tmp_path, "worker")
    try:
        async with api_client(settings) as client:
            job_id = await submit(client, settings, user, tool)
            await _wait_journal(journal, "run:s2")
            worker.popen.send_signal(signal.SIGTERM)
            assert worker.popen.wait(30) == 0
    finally:
        worker.stop(signal.SIGKILL)
    row = await wait_status(pool, job_id, timeout=1)
    assert row["status"] == "completed"
    assert read_journal(journal) == ["run:s1", "run:s2", "run:s3", "run:s4"]
    # Every log line about the job is JSON carrying job id, attempt and worker id; step lines name the step.
    lines = [json.loads(line) for line in worker.log().splitlines() if line.startswith("{")]
    about_job = [line for line in lines if line.get("job_id") == str(job_id)]
    assert {"step started", "step completed", "job completed"} <= {line["msg"] for line in about_job}
    for line in about_job:
        assert line["attempt"] == "1" and line["worker_id"], line
    assert {line["step"] for line in about_job if line["msg"] == "step started"} == {"s1", "s2", "s3", "s4"}


async def test_sigterm_past_the_grace_period_hands_the_job_to_another_worker(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    settings = scripted(settings, shutdown_grace_seconds=0.5)
    journal = tmp_path / "journal"
    user, tool = await scripted_tool(pool, journal, {"s3": {"sleep": 4}})
    first = _worker(settings, tmp_path, "first")
    second = None
    try:
        async with api_client(settings) as client:
            job_id = await submit(client, settings, user, tool)
            await _wait_journal(journal, "run:s3")
            first.popen.send_signal(signal.SIGTERM)
            assert first.popen.wait(15) == 0
            second = _worker(settings, tmp_path, "second")
            row = await wait_status(pool, job_id, timeout=30)
    finally:
        first.stop(signal.SIGKILL)
        if second is not None:
            second.stop()
    assert row["status"] == "completed"
    # s1 and s2 kept their outputs on this machine, so only the interrupted step runs again.
    assert read_journal(journal) == ["run:s1", "run:s2", "run:s3", "run:s3", "run:s4"]
    assert await terminal_messages(pool, job_id) == ["export.completed"]
