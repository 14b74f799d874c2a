"""`exporter cleanup`: retention of old terminal jobs and of expired packages."""

from __future__ import annotations

import argparse
import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import asyncpg

from service import jobs, metrics
from service.config import Settings
from service.db import create_pool
from service.outbox import PRUNE
from service.storage import Storage, open_storage

__all__ = ["Removed", "cleanup", "register_commands"]

log = logging.getLogger(__name__)
BATCH = 500


@dataclass
class Removed:
    packages: int = 0
    jobs: int = 0
    outbox: int = 0


async def cleanup(
    pool: asyncpg.Pool, storage: Storage, retention_days: int, package_ttl_days: int
) -> Removed:
    """Expire packages older than the TTL, then delete terminal jobs past retention."""
    removed = Removed()
    while True:  # each batch commits on its own, so a crash loses no more than one batch
        async with pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(jobs.EXPIRE_PACKAGES, package_ttl_days, BATCH)
            for row in rows:
                await storage.delete(row["package_path"])
        removed.packages += len(rows)
        if len(rows) < BATCH:
            break
    while True:
        async with pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(jobs.DELETE_OLD_JOBS, retention_days, BATCH)
            for row in rows:
                if row["package_path"] and row["package_expired_at"] is None:
                    await storage.delete(row["package_path"])
        removed.jobs += len(rows)
        if len(rows) < BATCH:
            break
    status = await pool.execute(PRUNE, retention_days)
    removed.outbox = int(status.split()[-1])
    metrics.CLEANUP_DELETED.labels("package").inc(removed.packages)
    metrics.CLEANUP_DELETED.labels("job").inc(removed.jobs)
    return removed


async def _run(settings: Settings, retention_days: int, package_ttl_days: int) -> Removed:
    pool = await create_pool(settings, max_size=2)
    try:
        return await cleanup(pool, open_storage(settings), retention_days, package_ttl_days)
    finally:
        await pool.close()


def _command(args: argparse.Namespace, settings: Settings) -> int:
    retention = args.retention_days or settings.retention_days
    ttl = args.package_ttl_days or settings.package_ttl_days
    removed = asyncio.run(_run(settings, retention, ttl))
    print(
        f"cleanup: expired {removed.packages} packages (older than {ttl} days), "
        f"deleted {removed.jobs} jobs (older than {retention} days), "
        f"pruned {removed.outbox} published outbox rows"
    )
    return 0


def _days(value: str) -> int:
    days = int(value)
    if days < 1:
        raise argparse.ArgumentTypeError("must be a whole number of days, at least 1")
    return days


def register_commands(sub: Any) -> None:
    p = sub.add_parser("cleanup", help="retention: remove old jobs and expired packages")
    p.add_argument("--retention-days", type=_days, help="default EXPORTER_RETENTION_DAYS")
    p.add_argument("--package-ttl-days", type=_days, help="default EXPORTER_PACKAGE_TTL_DAYS")
    p.set_defaults(handler=_command)
