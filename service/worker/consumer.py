"""The worker process: consumes export requests, claims jobs, runs them, acks when terminal.

The job row is the lease, not the message: a worker claims the row, heartbeats it while
the job runs, and a job whose worker vanished is claimed again by whoever receives its
message next (redelivered by the broker, or republished by the reaper). The delivery is
acked only after the job's terminal status is committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue
from pydantic import ValidationError

from service import callbacks, jobs, metrics, outbox
from service.broker import Broker
from service.config import Settings
from service.errors import InvalidInput
from service.jobs import TERMINAL, JobStatus
from service.logs import bind
from service.messages import REQUESTED_KEY, ExportRequested, job_event, parse_request
from service.steps import StepContext, Strategy, Tool
from service.storage import Storage
from service.strategies import Registry
from service.tools import claimed_tool, get_tool_for_user
from service.worker.orchestrator import JobRun, StopReason, run_job

__all__ = ["Worker"]

log = logging.getLogger(__name__)

CANCEL_CHANNEL = "exporter_cancel"
RETRY_DELIVERY_SECONDS = 2.0


@dataclass
class Running:
    task: asyncio.Task[Any]
    run: JobRun | None = None


class Worker:
    """Consumes `<prefix>.requests` with prefetch = concurrency and runs jobs as tasks."""

    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        broker: Broker,
        storage: Storage,
        registry: Registry,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.broker = broker
        self.storage = storage
        self.registry = registry
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{id(self) & 0xFFFF:04x}"
        self.running: dict[UUID, Running] = {}
        self.deliveries: set[asyncio.Task[Any]] = set()
        self.stopping = False
        self._queue: AbstractQueue | None = None
        self._consumer_tag: str | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set, then shut down gracefully."""
        bind(worker_id=self.worker_id)
        channel = await self.broker.connection.channel()  # type: ignore[union-attr]
        await channel.set_qos(prefetch_count=self.settings.worker_concurrency)
        self._queue = await self.broker.request_queue(channel)
        self._consumer_tag = await self._queue.consume(self._on_delivery)
        log.info("worker consuming", extra={"queue": self.broker.topology.requests})
        side = [
            asyncio.create_task(self._heartbeat_loop(stop), name="heartbeat"),
            asyncio.create_task(self._reaper_loop(stop), name="reaper"),
            asyncio.create_task(self._listen_cancels(stop), name="cancel-listener"),
        ]
        try:
            await stop.wait()
        finally:
            await self._shutdown()
            for task in side:
                task.cancel()
            await asyncio.gather(*side, return_exceptions=True)
            with contextlib.suppress(Exception):
                await channel.close()

    async def _shutdown(self) -> None:
        """Stop consuming, let running jobs finish within the grace period, hand back the rest."""
        self.stopping = True
        if self._queue is not None and self._consumer_tag is not None:
            with contextlib.suppress(Exception):
                await self._queue.cancel(self._consumer_tag)
        pending = set(self.deliveries)
        if pending:
            log.info("waiting for running jobs", extra={"jobs": len(pending)})
            _, pending = await asyncio.wait(pending, timeout=self.settings.shutdown_grace_seconds)
        for entry in self.running.values():
            if entry.run is not None:
                entry.run.stop_reason = entry.run.stop_reason or StopReason.SHUTDOWN
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    # -- deliveries ---------------------------------------------------------------------

    async def _on_delivery(self, delivery: AbstractIncomingMessage) -> None:
        task = asyncio.create_task(self._handle(delivery))
        self.deliveries.add(task)
        task.add_done_callback(self.deliveries.discard)

    async def _handle(self, delivery: AbstractIncomingMessage) -> None:
        try:
            message = parse_request(delivery.body)
        except InvalidInput as exc:
            await self._poison(delivery, exc.code, exc.message, None)
            return
        bind(job_id=message.job_id, attempt=message.attempt)
        try:
            await self._process(delivery, message)
        except asyncio.CancelledError:
            if self.stopping:
                await self._hand_back(delivery, message)
            else:  # lease lost: another worker owns the job and its message now
                with contextlib.suppress(Exception):
                    await delivery.ack()
            raise
        except Exception:
            # Database or broker trouble outside any step: back off, then requeue a fresh
            # copy, so an outage doesn't spend the message's delivery limit in a hot loop.
            log.exception("delivery failed; requeueing")
            await asyncio.sleep(RETRY_DELIVERY_SECONDS)
            await self._hand_back(delivery, message)

    async def _process(self, delivery: AbstractIncomingMessage, message: ExportRequested) -> None:
        # Claim first: the claim also reads the tool and checks the user, so a job costs one
        # statement before it runs. A job that can't run is failed after being claimed.
        try:
            job = await self._claim(message)
        except InvalidInput as exc:
            await self._poison(delivery, exc.code, exc.message, message.job_id)
            return
        if job is None:
            await delivery.ack()
            return
        tool = claimed_tool(job)
        strategy = self.registry.get((tool.type, message.format)) if tool else None
        problem = self._check(message, tool, job["user_exists"], strategy)
        if problem is None:
            assert strategy is not None
            try:
                options = strategy.options.model_validate(callbacks.strategy_options(message.options))
            except ValidationError as exc:
                problem = "invalid_options", str(exc.errors()[0]["msg"])
        if problem is not None:
            await self._poison(delivery, *problem, message.job_id)
            return
        assert tool is not None and strategy is not None
        ctx = StepContext(
            job_id=message.job_id,
            user_id=message.user_id,
            attempt=message.attempt,
            format=message.format,
            options=options,
            tool=tool,
            strategy=strategy.name,
            work_path=self.settings.work_dir / f"{message.job_id}-{message.attempt}",
            pool=self.pool,
            settings=self.settings,
            storage=self.storage,
        )
        run = JobRun(job=job, strategy=strategy, ctx=ctx, worker_id=self.worker_id)
        entry = Running(task=asyncio.current_task(), run=run)  # type: ignore[arg-type]
        self.running[message.job_id] = entry
        try:
            status = await run_job(run, self.pool, self.settings)
        finally:
            self.running.pop(message.job_id, None)
        if job["deliveries"] > self.settings.delivery_limit and status in (
            JobStatus.FAILED,
            JobStatus.ROLLED_BACK,
        ):
            await self._dead_letter(delivery, "delivery_limit", "delivery limit reached")
        await delivery.ack()

    @staticmethod
    def _check(
        message: ExportRequested, tool: Tool | None, user_exists: bool, strategy: Strategy | None
    ) -> tuple[str, str] | None:
        """Why a well-formed message still cannot run, or None."""
        if tool is None:
            return "unknown_tool", f"tool {message.tool_id} does not exist"
        if not user_exists:
            return "unknown_user", f"user {message.user_id} does not exist"
        if strategy is None:
            return "unsupported_format", f"format {message.format!r} is not supported for this tool"
        return None

    async def _create_job(self, message: ExportRequested) -> None:
        """Create the job row for a message published straight to the exchange (once).

        Raises InvalidInput when the message names a tool, user or format that can't run.
        """
        tool, user_exists = await get_tool_for_user(self.pool, message.tool_id, message.user_id)
        strategy = self.registry.get((tool.type, message.format)) if tool else None
        problem = self._check(message, tool, user_exists, strategy)
        if problem is not None:
            raise InvalidInput(problem[1], code=problem[0])
        assert strategy is not None
        steps_total = len(strategy.steps)
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                jobs.INSERT_JOB,
                message.job_id,
                message.tool_id,
                message.user_id,
                message.format,
                message.options,
                steps_total,
                None,
                None,
                message.attempt,
            )
            if row is not None:
                await jobs.add_event(conn, message.job_id, "created", source="message")
                log.info("job created from a directly published message")

    async def _claim(self, message: ExportRequested) -> asyncpg.Record | None:
        """Claim the job row, waiting while a live worker holds it; None when nothing is left to do."""
        while not self.stopping:
            args = (
                message.job_id,
                message.attempt,
                self.worker_id,
                self.settings.lease_seconds,
                message.user_id,
            )
            row = await self.pool.fetchrow(jobs.CLAIM, *args)
            if row is not None:
                return row
            current = await jobs.get_job(self.pool, message.job_id)
            if current is None:  # published straight to the exchange: the message makes the job
                await self._create_job(message)
                continue
            if current["attempt"] != message.attempt:
                log.info("stale message for another attempt; dropping")
                return None
            if JobStatus(current["status"]) in TERMINAL:
                log.info("job already finished; duplicate message dropped")
                return None
            # Another worker holds the lease; if it died, the lease runs out and we take over.
            await asyncio.sleep(self.settings.lease_seconds / 2)
        raise asyncio.CancelledError

    async def _poison(
        self, delivery: AbstractIncomingMessage, code: str, detail: str, job_id: UUID | None
    ) -> None:
        log.error("poison message", extra={"code": code, "error": detail})
        if job_id is not None:
            async with self.pool.acquire() as conn, conn.transaction():
                # Claimed by this worker before the problem showed (possibly while a cancel
                # was pending): it ends here.
                statuses = ["pending", "in_progress", "cancelling"]
                row = await conn.fetchrow(jobs.FAIL, job_id, code, detail, statuses)
                if row is not None:
                    await jobs.add_event(conn, job_id, "failed", code=code, error=detail)
                    await outbox.enqueue(conn, "events", *job_event(row))
        await self._dead_letter(delivery, code, detail)
        await delivery.ack()

    async def _dead_letter(self, delivery: AbstractIncomingMessage, code: str, detail: str) -> None:
        await self.broker.dead_letter(delivery, code, detail)
        metrics.DEAD_LETTERED.labels(code).inc()

    async def _hand_back(self, delivery: AbstractIncomingMessage, message: ExportRequested) -> None:
        """Release the row and requeue a fresh copy, so no delivery count is spent."""
        try:
            with contextlib.suppress(Exception):  # the lease runs out anyway
                await self.pool.execute(jobs.RELEASE, message.job_id, self.worker_id)
            await self.broker.publish(
                "requests",
                REQUESTED_KEY,
                delivery.body,
                message_id=str(message.job_id),
                headers=dict(delivery.headers or {}),
            )
            await delivery.ack()
            log.info("job handed back for another worker")
        except Exception:
            log.exception("hand-back failed; the broker will redeliver")
            with contextlib.suppress(Exception):
                await delivery.nack(requeue=True)

    # -- side tasks -----------------------------------------------------------------

    async def _heartbeat_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(self.settings.heartbeat_seconds)
            ids = list(self.running)
            if not ids:
                continue
            try:
                rows = await self.pool.fetch(jobs.HEARTBEAT, ids, self.worker_id)
            except Exception:
                log.exception("heartbeat failed")
                continue
            alive = {r["job_id"]: r["status"] for r in rows}
            for job_id in ids:
                if job_id not in alive:
                    self._interrupt(job_id, StopReason.LEASE_LOST)
                elif alive[job_id] == JobStatus.CANCELLING:
                    self._interrupt(job_id, StopReason.CANCEL_REQUESTED)

    def _interrupt(self, job_id: UUID, reason: StopReason) -> None:
        entry = self.running.get(job_id)
        if entry is None or entry.run is None or entry.run.stop_reason is not None:
            return
        log.info("interrupting job", extra={"job_id": str(job_id), "reason": reason.value})
        entry.run.stop_reason = reason
        entry.run.ctx.cancelled.set()
        if entry.run.in_step:
            entry.task.cancel(reason.value)

    async def _listen_cancels(self, stop: asyncio.Event) -> None:
        """NOTIFY makes cancellation immediate; the heartbeat is the fallback."""
        conn = await asyncpg.connect(self.settings.database_url)

        def on_notify(_conn: object, _pid: int, _channel: str, payload: object) -> None:
            with contextlib.suppress(ValueError):
                self._interrupt(UUID(str(payload)), StopReason.CANCEL_REQUESTED)

        try:
            await conn.add_listener(CANCEL_CHANNEL, on_notify)
            await stop.wait()
        finally:
            await conn.close()

    async def _reaper_loop(self, stop: asyncio.Event) -> None:
        """Republish jobs whose worker vanished and whose message is gone."""
        while not stop.is_set():
            await asyncio.sleep(self.settings.lease_seconds)
            try:
                await reap(self.pool, self.settings)
            except Exception:
                log.exception("reaper failed")


async def reap(pool: asyncpg.Pool, settings: Settings) -> int:
    """Hand orphaned running jobs back to the queue; fail those past the delivery limit."""
    count = 0
    async with pool.acquire() as conn, conn.transaction():
        for row in await conn.fetch(jobs.ORPHANS, settings.lease_seconds * 2, 100):
            if row["deliveries"] >= settings.delivery_limit:
                failed = await conn.fetchrow(
                    jobs.FAIL,
                    row["job_id"],
                    "delivery_limit",
                    f"the worker running this job vanished {row['deliveries']} times",
                    ["in_progress", "cancelling"],
                )
                if failed is not None:
                    await jobs.add_event(conn, row["job_id"], "failed", code="delivery_limit")
                    await outbox.enqueue(conn, "events", *job_event(failed))
                continue
            await conn.execute(jobs.RELEASE_ORPHAN, row["job_id"])
            message = ExportRequested(
                job_id=row["job_id"],
                tool_id=row["tool_id"],
                user_id=row["user_id"],
                format=row["format"],
                options=row["options"],
                attempt=row["attempt"],
                requested_at=row["created_at"],
            )
            await outbox.enqueue(conn, "requests", REQUESTED_KEY, str(row["job_id"]), message.body())
            await jobs.add_event(conn, row["job_id"], "requeued", reason="worker vanished")
            count += 1
    return count
