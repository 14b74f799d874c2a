"""Runs one job's steps: live progress, per-step timeouts, retries, rollback, cancellation, resume.

The caller (the consumer) has claimed the job row; this module moves it to a terminal
status, or re-raises CancelledError when the worker itself is stopping (shutdown, lost
lease), leaving the job for another worker to resume.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from uuid import UUID

import asyncpg
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
    wait_none,
)

from service import jobs, metrics, outbox
from service.config import Settings
from service.db import Executor
from service.errors import ExportError, PermanentError, StepTimeout, is_transient
from service.jobs import JobStatus
from service.logs import bind
from service.messages import job_event
from service.steps import Step, StepContext, Strategy

__all__ = ["JobRun", "StopReason", "run_job"]

log = logging.getLogger(__name__)

PROGRESS_INTERVAL = 0.5  # seconds between within-step progress writes
# A step's start is written once it has run this long (or fails): the status shows the steps
# that take time, and a quick one costs no write of its own (its row is written when it ends).
START_DELAY = 0.2


class StopReason(StrEnum):
    """Why the orchestrator's task was cancelled from outside."""

    CANCEL_REQUESTED = "cancel_requested"
    SHUTDOWN = "shutdown"
    LEASE_LOST = "lease_lost"


@dataclass
class JobRun:
    """A claimed job on its way to a terminal status."""

    job: asyncpg.Record
    strategy: Strategy
    ctx: StepContext
    worker_id: str
    stop_reason: StopReason | None = None
    completed: list[int] = field(default_factory=list)  # positions, in completion order
    interrupted: int | None = None  # the step that failed or was cut short, if any
    # Only a running step is interrupted from outside; between steps and while the job
    # completes or rolls back, a cancel is noticed at the next transition instead.
    in_step: bool = False
    last_step: tuple[float, bool] = (0.0, False)  # the last step to succeed: (seconds, start written)

    @property
    def job_id(self) -> UUID:
        return self.ctx.job_id

    def labels(self) -> tuple[str, str]:
        return self.strategy.tool_type, self.strategy.format


async def run_job(run: JobRun, pool: asyncpg.Pool, settings: Settings) -> JobStatus:
    """Run the job to a terminal status and return it (see module docstring)."""
    bind(job_id=run.job_id, attempt=run.ctx.attempt, strategy=run.strategy.name)
    started = time.monotonic()
    tool_type, fmt = run.labels()
    metrics.JOBS_IN_PROGRESS.labels(tool_type, fmt).inc()
    try:
        status = await _run(run, pool, settings)
    finally:
        metrics.JOBS_IN_PROGRESS.labels(tool_type, fmt).dec()
    metrics.JOBS_FINISHED.labels(tool_type, fmt, status.value).inc()
    metrics.JOB_DURATION.labels(tool_type, fmt, status.value).observe(time.monotonic() - started)
    return status


async def _run(run: JobRun, pool: asyncpg.Pool, settings: Settings) -> JobStatus:
    await _resume_point(run, pool)
    if run.job["status"] == JobStatus.CANCELLING:  # claimed while a cancel was pending
        return await _cancel(run, pool)
    if run.job["deliveries"] > settings.delivery_limit:
        error: ExportError = PermanentError(
            f"the job was delivered {run.job['deliveries']} times; the limit is {settings.delivery_limit}",
            code="delivery_limit",
        )
        return await _fail(run, pool, error)
    try:
        await _run_steps(run, pool, settings)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if run.stop_reason is not StopReason.CANCEL_REQUESTED:
            raise  # the worker is stopping; the job stays claimable for another worker
        if task is not None:
            task.uncancel()
        return await _cancel(run, pool)
    except Exception as exc:
        error = (
            exc
            if isinstance(exc, ExportError)
            else PermanentError(f"{type(exc).__name__}: {exc}", code="step_failed")
        )
        return await _fail(run, pool, error)
    return await _complete(run, pool)


async def _resume_point(run: JobRun, pool: asyncpg.Pool) -> None:
    """Skip the completed steps of an earlier run whose outputs still exist."""
    if run.job["deliveries"] <= 1:  # this attempt's first run: nothing to resume
        return
    rows = await pool.fetch(jobs.COMPLETED_STEPS, run.job_id, run.ctx.attempt)
    done = {r["position"] for r in rows}
    for position, step in enumerate(run.strategy.steps, start=1):
        if position not in done or not _outputs_exist(run.ctx, step):
            break
        run.completed.append(position)
    if run.completed:
        log.info("resuming after completed steps", extra={"skipped": len(run.completed)})
        await jobs.add_event(pool, run.job_id, "resumed", skipped=len(run.completed))


def _outputs_exist(ctx: StepContext, step: Step) -> bool:
    return all((ctx.workdir / name).exists() for name in step.outputs)


async def _run_steps(run: JobRun, pool: asyncpg.Pool, settings: Settings) -> None:
    steps = run.strategy.steps
    for position, step in enumerate(steps, start=1):
        if position in run.completed:
            continue
        bind(step=step.name)
        if run.ctx.cancelled.is_set():  # a cancel arrived between steps
            raise asyncio.CancelledError
        start = StepStart(run, pool, position, step)
        _install_progress(run, pool, position)
        log.info("step started", extra={"position": position})
        began = time.monotonic()
        try:
            run.in_step = True
            await _attempts(run, pool, settings, start)
        except BaseException as exc:
            run.in_step = False
            run.interrupted = position
            outcome = "cancelled" if isinstance(exc, asyncio.CancelledError) else "failed"
            metrics.STEP_DURATION.labels(run.strategy.name, step.name, outcome).observe(
                time.monotonic() - began
            )
            await start.written()
            await pool.execute(
                jobs.FINISH_STEP, run.job_id, run.ctx.attempt, position, "failed", _describe(exc)
            )
            raise
        run.in_step = False
        seconds = time.monotonic() - began
        metrics.STEP_DURATION.labels(run.strategy.name, step.name, "completed").observe(seconds)
        run.completed.append(position)
        run.last_step = (seconds, await start.settled())
        if position < len(steps):  # the last step completes together with the job
            await _record_step_done(run, pool, position, step)


class StepStart:
    """The write announcing a running step, made once it has run for START_DELAY.

    `written()` makes it now (a failure needs the row); `settled()`, before the step's end is
    written, stops a pending one and waits for one in flight, which must land first.
    """

    def __init__(self, run: JobRun, pool: asyncpg.Pool, position: int, step: Step) -> None:
        self.position = position
        self.step = step
        self._args = (
            run.job_id,
            run.worker_id,
            run.ctx.attempt,
            position,
            step.description[:255],
            step.name,
            len(run.strategy.steps),
        )
        self._pool = pool
        self._began = time.monotonic()
        self._write: asyncio.Future[Any] | None = None
        self._timer = asyncio.get_running_loop().call_later(START_DELAY, self._start)

    def _start(self) -> None:
        since = time.monotonic() - self._began
        self._write = asyncio.ensure_future(self._pool.execute(jobs.START_STEP, *self._args, since))

    async def written(self) -> None:
        self._timer.cancel()
        if self._write is None:
            self._start()
        assert self._write is not None
        await self._write

    async def settled(self) -> bool:
        """Whether the start was written."""
        self._timer.cancel()
        if self._write is None:
            return False
        await self._write
        return True


def _install_progress(run: JobRun, pool: asyncpg.Pool, position: int) -> None:
    """Let the step report a fraction done; persisted at most every PROGRESS_INTERVAL."""
    total = len(run.strategy.steps)
    last_write = 0.0
    loop = asyncio.get_running_loop()

    def report(fraction: float) -> None:
        nonlocal last_write
        now = time.monotonic()
        if now - last_write < PROGRESS_INTERVAL:
            return
        last_write = now
        percent = jobs.progress_percentage(position - 1, total, fraction)

        def write() -> None:
            task = loop.create_task(pool.execute(jobs.PROGRESS, run.job_id, run.worker_id, percent))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

        # Steps may report from worker threads; the write always happens on the loop.
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            write()
        else:
            loop.call_soon_threadsafe(write)

    run.ctx.report = report


async def _attempts(run: JobRun, pool: asyncpg.Pool, settings: Settings, start: StepStart) -> None:
    """Run the step, retrying transient errors with tenacity (the first try runs without it:
    building the retry machinery for every step of every job cost a tenth of a worker's time)."""
    tries = settings.step_max_attempts if start.step.retryable else 1
    try:
        await _try(run, pool, settings, start)
        return
    except Exception as exc:
        if tries == 1 or not is_transient(exc):
            raise
        failed: Exception | None = exc
    step = start.step
    backoff = settings.retry_backoff_seconds

    async def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        metrics.STEP_RETRIES.labels(run.strategy.name, step.name).inc()
        log.warning(
            "step failed, retrying",
            extra={"try": state.attempt_number, "error": _describe(exc)},
        )
        await jobs.add_event(
            pool,
            run.job_id,
            "retry",
            step=step.name,
            attempt=state.attempt_number,
            error=_describe(exc),
        )

    retrying = AsyncRetrying(
        stop=stop_after_attempt(tries),
        wait=wait_exponential_jitter(initial=backoff, max=30, jitter=backoff) if backoff else wait_none(),
        retry=retry_if_exception(is_transient),
        before_sleep=before_sleep,
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            if failed is not None:  # tenacity's first attempt is the try that already failed
                error, failed = failed, None
                raise error
            await _try(run, pool, settings, start)


async def _try(run: JobRun, pool: asyncpg.Pool, settings: Settings, start: StepStart) -> None:
    """One try of the step, within its timeout; a failed try is recorded on the step's row."""
    position, step = start.position, start.step
    timeout = step.timeout or settings.step_timeout_seconds
    began = time.monotonic()
    error = None
    try:
        async with asyncio.timeout(timeout):
            await step.run(run.ctx)
    except TimeoutError:
        elapsed = time.monotonic() - began
        error = StepTimeout(f"step {step.name!r} timed out after {elapsed:.1f}s (limit {timeout:g}s)")
    except Exception as exc:
        await start.written()
        await pool.execute(jobs.STEP_TRIED, run.job_id, run.ctx.attempt, position, _describe(exc))
        raise
    if error is not None:
        await start.written()
        await pool.execute(jobs.STEP_TRIED, run.job_id, run.ctx.attempt, position, error.message)
        raise error
    # A successful try is counted when the step is recorded done (STEP_DONE, COMPLETE).


async def _record_step_done(run: JobRun, pool: asyncpg.Pool, position: int, step: Step) -> None:
    percent = jobs.progress_percentage(position, len(run.strategy.steps))
    await pool.execute(jobs.STEP_DONE, *_step_end(run, position, step), percent)
    log.info("step completed", extra={"position": position})


def _step_end(run: JobRun, position: int, step: Step) -> tuple[Any, ...]:
    """Parameters $1-$7 of jobs.STEP_DONE and jobs.COMPLETE for the step that just succeeded."""
    seconds, start_written = run.last_step
    return (run.job_id, run.worker_id, run.ctx.attempt, position, step.name, seconds, start_written)


async def _lost_race(run: JobRun, pool: asyncpg.Pool) -> JobStatus:
    """A transition matched no row: follow a cancel request, or leave a job we no longer own."""
    row = await jobs.get_job(pool, run.job_id)
    if row is not None and row["status"] == JobStatus.CANCELLING and row["worker_id"] == run.worker_id:
        return await _cancel(run, pool)
    # Another worker took the job over (our lease ran out): touch nothing of it.
    log.warning("job no longer ours; leaving it", extra={"status": row["status"] if row else None})
    return JobStatus(row["status"]) if row is not None else JobStatus.FAILED


async def _complete(run: JobRun, pool: asyncpg.Pool) -> JobStatus:
    """Commit `completed` together with the last step."""
    package = run.ctx.package
    if package is None:
        raise PermanentError("strategy finished without producing a package", code="no_package")
    completed = {
        **run.job,
        "status": JobStatus.COMPLETED.value,
        "package_size_bytes": package.size,
        "package_sha256": package.sha256,
        "updated_at": None,
    }
    last = len(run.strategy.steps)
    row = await pool.fetchrow(
        jobs.COMPLETE,
        *_step_end(run, last, run.strategy.steps[last - 1]),
        package.key,
        package.size,
        package.sha256,
        *job_event(completed),
    )
    if row is None:
        return await _lost_race(run, pool)
    await _remove_workdir(run)
    log.info("job completed", extra={"size": package.size})
    return JobStatus.COMPLETED


async def _fail(run: JobRun, pool: asyncpg.Pool, error: ExportError) -> JobStatus:
    log.error("job failed", extra={"code": error.code, "error": error.message})
    rolls_back = bool(run.completed)
    if not rolls_back:  # nothing to roll back: clean up after the failed step, then it's final
        await _undo(run, pool, reason="failure")
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            jobs.FAIL_OWNED, run.job_id, error.code, error.message, run.worker_id, rolls_back
        )
        if row is not None:
            await jobs.add_event(conn, run.job_id, "failed", code=error.code, error=error.message)
            if not rolls_back:
                await _terminal_event(conn, row)
    if row is None:  # a cancel arrived meanwhile (the user's request wins), or the job moved on
        return await _lost_race(run, pool)
    if not rolls_back:
        return JobStatus.FAILED
    await _undo(run, pool, reason="failure")
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(jobs.ROLLED_BACK, run.job_id)
        if row is not None:
            await _terminal_event(conn, row)
    return JobStatus.ROLLED_BACK


async def _cancel(run: JobRun, pool: asyncpg.Pool) -> JobStatus:
    run.ctx.cancelled.set()
    log.info("job cancelling", extra={"undo": len(run.completed)})
    await _undo(run, pool, reason="cancel")
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(jobs.CANCELLED, run.job_id, run.worker_id)
        if row is not None:
            await jobs.add_event(conn, run.job_id, "cancelled")
            await _terminal_event(conn, row)
    return JobStatus.CANCELLED


async def _undo(run: JobRun, pool: asyncpg.Pool, reason: str) -> None:
    """Undo the interrupted step (it may have left partial output, such as an uploaded
    package) and then the completed steps in reverse order; one undo failing does not stop
    the others."""
    if run.completed:
        metrics.ROLLBACKS.labels(*run.labels(), reason).inc()
    steps = run.strategy.steps
    partial = [run.interrupted] if run.interrupted and run.interrupted not in run.completed else []
    for position in [*partial, *sorted(run.completed, reverse=True)]:
        step = steps[position - 1]
        completed = position in run.completed
        try:
            await step.undo(run.ctx)
        except Exception as exc:
            log.exception("undo failed", extra={"step": step.name})
            if completed:
                await pool.execute(
                    jobs.FINISH_STEP, run.job_id, run.ctx.attempt, position, "undo_failed", _describe(exc)
                )
            await jobs.add_event(pool, run.job_id, "undo_failed", step=step.name, error=_describe(exc))
            continue
        if completed:
            await pool.execute(jobs.FINISH_STEP, run.job_id, run.ctx.attempt, position, "undone", None)
        await jobs.add_event(pool, run.job_id, "rollback" if completed else "cleanup", step=step.name)
    await _remove_workdir(run)


async def _remove_workdir(run: JobRun) -> None:
    try:
        run.ctx.work_path.rmdir()  # empty or never made, most often: no thread needed
    except FileNotFoundError:
        pass
    except OSError:
        await asyncio.to_thread(shutil.rmtree, run.ctx.work_path, True)


async def _terminal_event(conn: Executor, row: asyncpg.Record) -> None:
    """Queue export.completed / export.failed / export.cancelled with the terminal status."""
    await outbox.enqueue(conn, "events", *job_event(row))


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return ""
    if isinstance(exc, ExportError):
        return f"{exc.code}: {exc.message}"[:2000]
    if isinstance(exc, asyncio.CancelledError):
        return "interrupted"
    return f"{type(exc).__name__}: {exc}"[:2000]
