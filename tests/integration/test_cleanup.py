"""Retention: old jobs and expired packages go, recent and running ones stay."""

from __future__ import annotations

from pathlib import Path

import asyncpg

from service.cleanup import cleanup
from service.config import Settings
from service.storage import LocalStorage
from tests.integration.test_cli import exporter
from tests.support.data import create_tool, create_user
from tests.support.processes import settings_env


async def _job(
    pool: asyncpg.Pool, user: object, tool: object, status: str, age_days: int, key: str | None
) -> object:
    return await pool.fetchval(
        "INSERT INTO export_jobs (tool_id, user_id, format, status, package_path, completed_at, created_at)"
        " VALUES ($1, $2, 'bundle', $3, $4, now() - make_interval(days => $5), now() - make_interval(days => $5))"
        " RETURNING job_id",
        tool,
        user,
        status,
        key,
        age_days,
    )


async def test_cleanup_removes_old_jobs_and_expired_packages(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    storage = LocalStorage(tmp_path / "packages")
    user = await create_user(pool, ["exporter"])
    tool = await create_tool(pool, user)
    source = tmp_path / "p.zip"
    source.write_bytes(b"zip")
    keys = {name: f"{name}/p.zip" for name in ("ancient", "expired", "fresh")}
    for key in keys.values():
        await storage.put(key, source, "application/zip")
    ancient = await _job(pool, user, tool, "completed", 40, keys["ancient"])
    expired = await _job(pool, user, tool, "completed", 10, keys["expired"])
    fresh = await _job(pool, user, tool, "completed", 1, keys["fresh"])
    old_failed = await _job(pool, user, tool, "failed", 40, None)
    running = await _job(pool, user, tool, "in_progress", 40, None)

    removed = await cleanup(pool, storage, retention_days=30, package_ttl_days=7)

    left = {r["job_id"]: r for r in await pool.fetch("SELECT job_id, package_expired_at FROM export_jobs")}
    assert set(left) == {expired, fresh, running}
    assert ancient not in left and old_failed not in left
    assert left[expired]["package_expired_at"] is not None and left[fresh]["package_expired_at"] is None
    assert not await storage.exists(keys["ancient"]) and not await storage.exists(keys["expired"])
    assert await storage.exists(keys["fresh"])
    assert (removed.packages, removed.jobs) == (2, 2)
    assert (await cleanup(pool, storage, 30, 7)).jobs == 0  # running it again finds nothing


async def test_an_injection_through_the_retention_value_fails_safely(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    user = await create_user(pool, ["exporter"])
    tool = await create_tool(pool, user)
    await _job(pool, user, tool, "failed", 40, None)
    bad = exporter(settings_env(settings, retention_days="1; DROP TABLE export_jobs"), "cleanup")
    assert bad.returncode == 2 and "EXPORTER_RETENTION_DAYS" in bad.stderr
    flag = exporter(settings_env(settings), "cleanup", "--retention-days", "1 OR 1=1")
    assert flag.returncode == 2
    assert await pool.fetchval("SELECT count(*) FROM export_jobs") == 1
    ok = exporter(settings_env(settings), "cleanup")
    assert ok.returncode == 0 and "deleted 1 jobs" in ok.stdout


async def test_a_worker_runs_cleanup_periodically(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    from tests.support.processes import running

    user = await create_user(pool, ["exporter"])
    tool = await create_tool(pool, user)
    await _job(pool, user, tool, "failed", 40, None)
    with running(settings, tmp_path, api=False, cleanup_interval_seconds=0.5):
        import asyncio

        for _ in range(100):
            if await pool.fetchval("SELECT count(*) FROM export_jobs") == 0:
                break
            await asyncio.sleep(0.1)
    assert await pool.fetchval("SELECT count(*) FROM export_jobs") == 0
