"""Periodic gauges read from PostgreSQL and RabbitMQ: jobs by status, outbox, queue depths."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg

from service import jobs, metrics, outbox
from service.broker import Broker
from service.config import Settings

__all__ = ["monitor"]

log = logging.getLogger(__name__)


async def sample(pool: asyncpg.Pool, broker: Broker, *, database: bool = True) -> None:
    """Refresh the gauges once; `database` includes the table-wide counts (API only)."""
    if database:
        await _sample_database(pool)
    if broker.is_connected:
        depths = await broker.queue_depths()
        metrics.QUEUE_MESSAGES.labels("requests").set(depths[broker.topology.requests])
        metrics.QUEUE_MESSAGES.labels("dead").set(depths[broker.topology.dead])
        metrics.DLQ_MESSAGES.set(depths[broker.topology.dead])


async def _sample_database(pool: asyncpg.Pool) -> None:
    counts = {r["status"]: r["count"] for r in await pool.fetch(jobs.COUNT_BY_STATUS)}
    for status in jobs.JobStatus:
        metrics.JOBS_BY_STATUS.labels(status.value).set(counts.get(status.value, 0))
    backlog, lag = await outbox.backlog(pool)
    metrics.OUTBOX_BACKLOG.set(backlog)
    metrics.OUTBOX_LAG.set(lag)


async def monitor(
    settings: Settings, pool: asyncpg.Pool, broker: Broker, stop: asyncio.Event, *, database: bool = True
) -> None:
    """Sample every EXPORTER_MONITOR_INTERVAL_SECONDS until stopped."""
    while not stop.is_set():
        try:
            await sample(pool, broker, database=database)
        except Exception as exc:
            log.debug("monitor sample failed", extra={"error": str(exc)})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), settings.monitor_interval_seconds)
