"""The transactional outbox: messages written with the job row, published by the relay.

A row is marked published only after the broker confirmed it, so a crash can publish a
message twice but never lose one; consumers are idempotent by job id.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

import asyncpg

from service import metrics
from service.broker import Broker
from service.config import Settings
from service.db import Executor, connect

__all__ = ["Relay", "enqueue", "unpublished"]

log = logging.getLogger(__name__)

CHANNEL = "exporter_outbox"
# After a batch that didn't fill up, wait this long for more rows before the next one: under
# a steady trickle (one completion or request at a time, hundreds a second) batches of one
# row cost a transaction each. A lone message after a quiet spell goes out at once.
LINGER_SECONDS = 0.02

INSERT = """
INSERT INTO export_outbox (exchange, routing_key, message_id, body, headers)
VALUES ($1, $2, $3, $4, $5)
RETURNING outbox_id
"""

# SKIP LOCKED lets several relays share the table without publishing a row twice.
CLAIM_BATCH = """
SELECT outbox_id, exchange, routing_key, message_id, body, headers
FROM export_outbox
WHERE published_at IS NULL
ORDER BY outbox_id
LIMIT $1
FOR UPDATE SKIP LOCKED
"""

UNPUBLISHED = """
SELECT outbox_id FROM export_outbox WHERE outbox_id = ANY($1::bigint[]) AND published_at IS NULL
"""

MARK_PUBLISHED = "UPDATE export_outbox SET published_at = now() WHERE outbox_id = ANY($1::bigint[])"

MARK_FAILED = """
UPDATE export_outbox SET tries = tries + 1, last_error = $2 WHERE outbox_id = ANY($1::bigint[])
"""

BACKLOG = """
SELECT count(*) AS backlog,
       coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 AS lag
FROM export_outbox WHERE published_at IS NULL
"""

PRUNE = """
DELETE FROM export_outbox WHERE published_at < now() - make_interval(days => $1)
"""


async def enqueue(
    conn: Executor,
    target: str,
    routing_key: str,
    message_id: str,
    body: dict[str, Any],
    headers: dict[str, Any] | None = None,
) -> int:
    """Queue a message in the caller's transaction; `target` is 'requests' or 'events'."""
    outbox_id: int = await conn.fetchval(INSERT, target, routing_key, message_id, body, headers or {})
    return outbox_id


async def unpublished(conn: Executor, ids: list[int]) -> set[int]:
    """Which of these rows still wait for a broker confirm."""
    rows = await conn.fetch(UNPUBLISHED, ids)
    return {r["outbox_id"] for r in rows}


async def backlog(conn: Executor) -> tuple[int, float]:
    row = await conn.fetchrow(BACKLOG)
    assert row is not None
    return int(row["backlog"]), float(row["lag"])


class PublishFailed(Exception):
    """Some outbox rows were not confirmed by the broker; they will be retried."""


class Relay:
    """Publishes outbox rows in order, in batches, waking on NOTIFY with a poll as fallback.

    Request rows notify (an accepted job should start at once); event rows don't, so that
    completions don't serialise on the notification lock (migration 0002): they go out with
    the next batch, or within EXPORTER_RELAY_POLL_SECONDS.
    """

    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        broker: Broker,
        batch: int = 200,
        linger: float = LINGER_SECONDS,
    ):
        self.settings = settings
        self.pool = pool
        self.broker = broker
        self.batch = batch
        self.linger = linger
        self._wake = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        listener = await self._listen()
        backoff = 0.2
        try:
            while not stop.is_set():
                try:
                    published = await self.publish_batch()
                    backoff = 0.2
                except Exception as exc:  # broker or database away: keep rows, retry later
                    log.warning("relay: publish failed, will retry", extra={"error": str(exc)})
                    published = 0
                    await _sleep_or_stop(stop, backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                if published >= self.batch:
                    continue  # more waiting: don't sleep under load
                if published:
                    await _sleep_or_stop(stop, self.linger)
                    continue
                if listener is None or listener.is_closed():
                    listener = await self._listen()
                self._wake.clear()
                await _wait_any(stop, self._wake, self.settings.relay_poll_seconds)
        finally:
            if listener is not None and not listener.is_closed():
                await listener.close()

    async def _listen(self) -> asyncpg.Connection | None:
        try:
            conn = await connect(self.settings)
            await conn.add_listener(CHANNEL, lambda *_: self._wake.set())
            return conn
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("relay: LISTEN unavailable, polling", extra={"error": str(exc)})
            return None

    async def publish_batch(self) -> int:
        """Publish one batch; returns how many rows were published.

        Rows are confirmed one by one: those the broker took are marked published, the
        others stay for the next round, so one bad row never blocks the rest.
        """
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(CLAIM_BATCH, self.batch)
            if not rows:
                return 0
            results = await asyncio.gather(*(self._publish(row) for row in rows), return_exceptions=True)
            published = [
                row["outbox_id"] for row, result in zip(rows, results, strict=True) if result is None
            ]
            errors = [(row["outbox_id"], result) for row, result in zip(rows, results, strict=True) if result]
            if published:
                await conn.execute(MARK_PUBLISHED, published)
            if errors:
                await conn.execute(MARK_FAILED, [i for i, _ in errors], str(errors[0][1])[:500])
        metrics.OUTBOX_PUBLISHED.inc(len(published))
        if errors:
            raise PublishFailed(f"{len(errors)} of {len(rows)} messages not confirmed: {errors[0][1]}")
        return len(published)

    async def _publish(self, row: asyncpg.Record) -> None:
        body = row["body"]
        await self.broker.publish(
            row["exchange"],
            row["routing_key"],
            json.dumps(body).encode(),
            message_id=row["message_id"],
            headers=row["headers"],
        )


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def _wait_any(stop: asyncio.Event, wake: asyncio.Event, timeout: float) -> None:
    waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
