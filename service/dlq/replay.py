"""Replaying dead letters: republish, confirm, and only then remove the dead letter.

A job that failed *because* its message was dead-lettered (its error_code is the dead
letter's reason, same attempt) is reset the way POST /retry resets it (attempt + 1); the
reset and the new message are one transaction through the outbox. Any other job is left
alone: workers drop messages for finished jobs, so a replay never runs a completed job again.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

import asyncpg
from aio_pika.abc import AbstractIncomingMessage

from service import jobs, outbox
from service.broker import AT_HEADER, DELIVERIES_HEADER, DETAIL_HEADER, REASON_HEADER, Broker
from service.config import Settings
from service.db import create_pool
from service.dlq.letters import REPLAYS_HEADER, DeadLetter, Filter, Scanner, Unavailable, replays, safe_url
from service.errors import InvalidInput
from service.messages import REQUESTED_KEY, ExportRequested, Topology, parse_request
from service.outbox import Relay

__all__ = ["REPLAYED_AT_HEADER", "Replayer", "replay"]

REPLAYED_AT_HEADER = "x-export-replayed-at"
# Added by the broker or by dead-lettering; a replayed message starts without them.
DEAD_LETTER_HEADERS = frozenset(
    {
        REASON_HEADER,
        DETAIL_HEADER,
        AT_HEADER,
        DELIVERIES_HEADER,
        "x-export-original-routing-key",
        "x-death",
        "x-delivery-count",
        "x-first-death-exchange",
        "x-first-death-queue",
        "x-first-death-reason",
        "x-last-death-exchange",
        "x-last-death-queue",
        "x-last-death-reason",
    }
)
CHUNK = 100  # replays confirmed concurrently
FLUSH_SECONDS = 30.0  # how long a reset job's message may take to leave the outbox


@dataclass
class Replayer:
    """Republishes dead letters and acks each only after the broker confirmed its copy."""

    settings: Settings
    pool: asyncpg.Pool
    broker: Broker

    async def plan(self, letter: DeadLetter) -> tuple[ExportRequested | None, asyncpg.Record | None, str]:
        """The parsed message, its job row, and what a replay will do, in words."""
        try:
            message = parse_request(letter.message.body)
        except InvalidInput as exc:
            return None, None, f"not a valid v1 message ({exc.code}): it will be dead-lettered again"
        row = await jobs.get_job(self.pool, message.job_id)
        if row is None:
            return message, None, "no job row yet: a worker creates it"
        if _resets(letter, message, row):
            return (
                message,
                row,
                f"job {row['status']} ({row['error_code']}): reset to attempt {row['attempt'] + 1}",
            )
        if row["status"] in jobs.TERMINAL:
            return message, row, f"job already {row['status']}: workers will drop it"
        return message, row, f"job {row['status']}: a worker picks it up"

    async def replay(self, letter: DeadLetter) -> str:
        """Replay one letter; returns what happened, raises if the letter was kept."""
        message, row, note = await self.plan(letter)
        headers = _replay_headers(letter.message)
        if message is not None and row is not None and _resets(letter, message, row):
            outbox_id = await self._reset(letter, message, headers)
            if outbox_id is not None:
                await self._flush(outbox_id)
                await letter.message.ack()
                return note
            _, _, note = await self.plan(letter)  # someone else moved the job meanwhile
        original = {k: v for k, v in (letter.message.headers or {}).items() if k not in DEAD_LETTER_HEADERS}
        await self.broker.publish(
            "requests",
            REQUESTED_KEY,
            letter.message.body,
            message_id=letter.message.message_id or (str(message.job_id) if message else ""),
            headers={**original, **headers},
        )
        await letter.message.ack()
        return note

    async def _reset(
        self, letter: DeadLetter, message: ExportRequested, headers: dict[str, Any]
    ) -> int | None:
        """Reset the job and queue its next attempt in one transaction; None if it moved."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(jobs.RETRY, message.job_id)
            if row is None:
                return None
            body = message.model_copy(update={"attempt": row["attempt"]}).body()
            outbox_id = await outbox.enqueue(
                conn, "requests", REQUESTED_KEY, str(message.job_id), body, headers
            )
            await jobs.add_event(
                conn, message.job_id, "replayed", attempt=row["attempt"], reason=letter.reason, source="dlq"
            )
        return outbox_id

    async def _flush(self, outbox_id: int) -> None:
        """Publish the outbox (as a relay would) until this row is confirmed."""
        relay = Relay(self.settings, self.pool, self.broker)
        deadline = time.monotonic() + FLUSH_SECONDS
        while await outbox.unpublished(self.pool, [outbox_id]):
            if time.monotonic() > deadline:
                raise TimeoutError(
                    "job reset, but its message was not confirmed in time; it waits in the outbox "
                    "for a relay, and the dead letter was kept"
                )
            try:
                published = await relay.publish_batch()
            except Exception:
                published = 0  # broker trouble: rows stay for the next round
            if not published:
                await asyncio.sleep(0.1)  # another relay holds the row, or the broker is away


def _resets(letter: DeadLetter, message: ExportRequested, row: asyncpg.Record) -> bool:
    """The job failed because this very message was dead-lettered."""
    return (
        row["status"] in ("failed", "rolled_back")
        and row["error_code"] == letter.reason
        and row["attempt"] == message.attempt
    )


def _replay_headers(message: AbstractIncomingMessage) -> dict[str, Any]:
    return {REPLAYED_AT_HEADER: datetime.now(UTC).isoformat(), REPLAYS_HEADER: replays(message) + 1}


async def replay(settings: Settings, flt: Filter, limit: int | None, dry_run: bool, out: TextIO) -> int:
    """Replay matching dead letters (at most `limit`); see the module docstring."""
    queue = Topology(settings.topology_prefix).dead
    try:
        pool = await create_pool(settings, max_size=8)
    except (OSError, asyncpg.PostgresError) as exc:
        raise Unavailable(f"cannot reach PostgreSQL: {exc}") from exc
    broker = Broker(settings)
    try:
        try:
            await broker.connect()
        except Exception as exc:
            raise Unavailable(f"cannot reach RabbitMQ at {safe_url(settings.amqp_url)}: {exc}") from exc
        replayer = Replayer(settings, pool, broker)
        async with Scanner(settings.amqp_url, queue) as scan:
            done, failed = 0, 0
            chunk: list[DeadLetter] = []
            async for letter in scan.letters():
                if not flt(letter):
                    continue  # kept: goes back when the scan ends
                if limit is not None and done + failed + len(chunk) >= limit:
                    break
                if dry_run:
                    _, _, note = await replayer.plan(letter)
                    print(f"would replay {letter.id} job {letter.job_id} ({letter.reason}): {note}", file=out)
                    done += 1
                    continue
                chunk.append(letter)
                if len(chunk) >= CHUNK:
                    ok, bad = await _replay_chunk(replayer, chunk, out)
                    done, failed, chunk = done + ok, failed + bad, []
            if chunk:
                ok, bad = await _replay_chunk(replayer, chunk, out)
                done, failed = done + ok, failed + bad
    finally:
        await broker.close()
        await pool.close()
    verb = "would replay" if dry_run else "replayed"
    print(f"dlq: {verb} {done} of {scan.depth} dead letter(s) in {queue}; {failed} failed", file=out)
    if failed or (done == 0 and (flt.narrowed or scan.depth)):
        return 1
    return 0


async def _replay_chunk(replayer: Replayer, chunk: list[DeadLetter], out: TextIO) -> tuple[int, int]:
    results = await asyncio.gather(*(replayer.replay(letter) for letter in chunk), return_exceptions=True)
    ok = 0
    for letter, result in zip(chunk, results, strict=True):
        if isinstance(result, BaseException):
            print(
                f"kept {letter.id} job {letter.job_id} ({letter.reason}): replay failed: {result}", file=out
            )
        else:
            ok += 1
            print(f"replayed {letter.id} job {letter.job_id} ({letter.reason}): {result}", file=out)
    return ok, len(chunk) - ok
