"""Export jobs: the status machine, and every query on export_jobs, its steps and events.

Transitions are UPDATEs naming the statuses they may start from, so two processes can
never both move a job; a query that matched no row lost the race and says so.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from service.db import Executor

__all__ = ["TERMINAL", "JobFilter", "JobStatus", "add_event", "get_job", "list_jobs", "list_query"]


class JobStatus(enum.StrEnum):
    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"
    ROLLED_BACK = "rolled_back"


TERMINAL = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.ROLLED_BACK})
RETRYABLE = ("failed", "rolled_back", "cancelled")

INSERT_JOB = """
INSERT INTO export_jobs (job_id, tool_id, user_id, format, options, steps_total,
                         idempotency_key, request_hash, attempt)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT DO NOTHING
RETURNING *
"""

GET_JOB = "SELECT * FROM export_jobs WHERE job_id = $1"

# Joined into the writes of a running job (claim, step start and end, progress) so that they
# commit without waiting for the WAL flush: a PostgreSQL crash may lose the last few, and the
# job is then claimed again and its step re-run, as after any crash. Terminal transitions keep
# the synchronous commit, and their flush makes every earlier write durable too. Transaction-
# local and inside the statement: no extra round trip. Run these on their own (autocommit),
# never in a transaction that also ends a job, or that commit would not wait for the flush.
NO_FLUSH = "(SELECT set_config('synchronous_commit', 'off', true)) AS no_flush"

GET_BY_IDEMPOTENCY_KEY = """
SELECT * FROM export_jobs WHERE user_id = $1 AND idempotency_key = $2
"""

# A pending job, or a running one whose worker stopped heartbeating (crashed, lost), with
# its `started` event. A worker's one statement before running a job, so it also reads what
# the job needs from other tables: the tool (tool_* columns) and whether the requesting user
# ($5) still exists.
CLAIM = f"""
WITH claimed AS (
    UPDATE export_jobs
    SET status = CASE WHEN status = 'cancelling' THEN status ELSE 'in_progress' END,
        worker_id = $3, heartbeat_at = now(), deliveries = deliveries + 1,
        started_at = coalesce(started_at, now()), updated_at = now()
    WHERE job_id = $1 AND attempt = $2
      AND (status = 'pending'
           OR (status IN ('in_progress', 'cancelling')
               AND (worker_id IS NULL OR heartbeat_at < now() - make_interval(secs => $4))))
    RETURNING *
), started AS (
    INSERT INTO export_job_events (job_id, kind, detail)
    SELECT job_id, 'started', jsonb_build_object('worker', worker_id, 'delivery', deliveries)
    FROM claimed, {NO_FLUSH}
)
SELECT claimed.*, t.tool_name, t.tool_type, t.tool_metadata,
       t.owner_id AS tool_owner_id, t.updated_at AS tool_updated_at,
       EXISTS (SELECT FROM users WHERE user_id = $5) AS user_exists
FROM claimed LEFT JOIN tool_registry AS t USING (tool_id)
"""

HEARTBEAT = """
UPDATE export_jobs SET heartbeat_at = now()
WHERE job_id = ANY($1::uuid[]) AND worker_id = $2 AND status IN ('in_progress', 'cancelling')
RETURNING job_id, status
"""

# A step is running: the job shows it as current (and how many steps this strategy has), and
# the step's row (new, or reset on resume) runs, since $8 seconds (it is announced late).
START_STEP = f"""
WITH job AS (
    UPDATE export_jobs SET current_step = $5, steps_total = $7, updated_at = now()
    WHERE job_id = $1 AND worker_id = $2
)
INSERT INTO export_job_steps (job_id, attempt, position, name, status, tries, started_at)
SELECT $1, $3, $4, $6, 'running', 0, now() - make_interval(secs => $8) FROM {NO_FLUSH}
ON CONFLICT (job_id, attempt, position)
DO UPDATE SET status = 'running', started_at = excluded.started_at, finished_at = NULL, error = NULL
"""

STEP_TRIED = """
UPDATE export_job_steps SET tries = tries + 1, error = $4
WHERE job_id = $1 AND attempt = $2 AND position = $3
"""

FINISH_STEP = """
UPDATE export_job_steps SET status = $4, finished_at = now(), error = $5
WHERE job_id = $1 AND attempt = $2 AND position = $3
"""

# A step succeeded: its row, created here if its start was never written (a step that ends
# quickly isn't announced, see orchestrator.START_DELAY), else counted one more try.
# $1 job, $3 attempt, $4 position, $5 name, $6 seconds it ran, $7 whether its start was written.
_STEP_SUCCEEDED = """
    INSERT INTO export_job_steps (job_id, attempt, position, name, status, tries, started_at, finished_at)
    SELECT $1, $3, $4, $5, 'completed', 1, now() - make_interval(secs => $6), now() {source}
    ON CONFLICT (job_id, attempt, position)
    DO UPDATE SET status = 'completed', tries = export_job_steps.tries + 1, finished_at = now(), error = NULL,
                  started_at = CASE WHEN $7 THEN export_job_steps.started_at ELSE excluded.started_at END
"""

# A step other than the last succeeded: its row, the job's progress ($8) and the
# `step_completed` event, in one statement.
STEP_DONE = f"""
WITH step AS ({_STEP_SUCCEEDED.format(source="")}
), job AS (
    UPDATE export_jobs
    SET steps_completed = $4, progress_percentage = $8, updated_at = now()
    WHERE job_id = $1 AND worker_id = $2 AND status IN ('in_progress', 'cancelling')
)
INSERT INTO export_job_events (job_id, kind, detail)
SELECT $1, 'step_completed', jsonb_build_object('step', $5::text, 'position', $4::int) FROM {NO_FLUSH}
"""

# Within-step progress: only ever forwards, so a late write can't move the bar back.
PROGRESS = f"""
UPDATE export_jobs SET progress_percentage = $3, updated_at = now()
FROM {NO_FLUSH}
WHERE job_id = $1 AND worker_id = $2 AND status = 'in_progress' AND progress_percentage < $3
"""

COMPLETED_STEPS = """
SELECT position FROM export_job_steps
WHERE job_id = $1 AND attempt = $2 AND status = 'completed'
ORDER BY position
"""

STEPS = """
SELECT position, name, status, tries, started_at, finished_at, error
FROM export_job_steps WHERE job_id = $1 AND attempt = $2 ORDER BY position
"""

RESET_PROGRESS = """
UPDATE export_job_steps SET status = 'failed', error = 'outputs lost; started over'
WHERE job_id = $1 AND attempt = $2 AND status = 'completed'
"""

# The last step succeeded: the job is completed, with its `completed` event and its
# export.completed message queued in the outbox ($8-$11 from messages.job_event, finished_at
# added from the row), $1-$7 as in _STEP_SUCCEEDED. One statement, where outbox.enqueue
# would cost three more round trips on every job. No row is returned when the job is no longer this worker's to complete.
COMPLETE = f"""
WITH done AS (
    UPDATE export_jobs
    SET status = 'completed', steps_completed = steps_total, progress_percentage = 100,
        current_step = NULL, package_path = $8, package_size_bytes = $9, package_sha256 = $10,
        completed_at = now(), updated_at = now(), worker_id = NULL, heartbeat_at = NULL
    WHERE job_id = $1 AND worker_id = $2 AND status = 'in_progress'
    RETURNING *
), step AS ({_STEP_SUCCEEDED.format(source="FROM done")}
), event AS (
    INSERT INTO export_job_events (job_id, kind, detail)
    SELECT job_id, 'completed', jsonb_build_object('size', package_size_bytes, 'sha256', package_sha256)
    FROM done
), message AS (
    INSERT INTO export_outbox (exchange, routing_key, message_id, body, headers)
    SELECT 'events', $11, $12,
           $13::jsonb || jsonb_build_object(
               'finished_at', to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"')),
           $14::jsonb
    FROM done
)
SELECT * FROM done
"""

FAIL = """
UPDATE export_jobs
SET status = 'failed', error_code = $2, error_message = $3, current_step = NULL,
    completed_at = now(), updated_at = now(), worker_id = NULL, heartbeat_at = NULL
WHERE job_id = $1 AND status = ANY($4::export_job_status[])
RETURNING *
"""

# The orchestrator's failure: only from a running job this worker still owns. While
# completed steps are being undone ($5) the worker keeps its id on the row, so readers can
# tell a `failed` on its way to `rolled_back` from a final one.
FAIL_OWNED = """
UPDATE export_jobs
SET status = 'failed', error_code = $2, error_message = $3, current_step = NULL,
    completed_at = now(), updated_at = now(),
    worker_id = CASE WHEN $5 THEN worker_id END, heartbeat_at = CASE WHEN $5 THEN heartbeat_at END
WHERE job_id = $1 AND status = 'in_progress' AND worker_id = $4
RETURNING *
"""

ROLLED_BACK = """
UPDATE export_jobs SET status = 'rolled_back', updated_at = now(), worker_id = NULL, heartbeat_at = NULL
WHERE job_id = $1 AND status = 'failed'
RETURNING *
"""

CANCELLED = """
UPDATE export_jobs
SET status = 'cancelled', current_step = NULL, completed_at = now(), updated_at = now(),
    worker_id = NULL, heartbeat_at = NULL,
    error_code = coalesce(error_code, 'cancelled'),
    error_message = coalesce(error_message, 'cancelled on request')
WHERE job_id = $1 AND status = 'cancelling' AND (worker_id = $2 OR worker_id IS NULL)
RETURNING *
"""

# A pending job is cancelled at once; a running one is asked to stop.
REQUEST_CANCEL = """
UPDATE export_jobs
SET status = CASE WHEN status = 'pending' THEN 'cancelled'::export_job_status
                  ELSE 'cancelling'::export_job_status END,
    completed_at = CASE WHEN status = 'pending' THEN now() ELSE completed_at END,
    error_code = CASE WHEN status = 'pending' THEN 'cancelled' ELSE error_code END,
    error_message = CASE WHEN status = 'pending' THEN 'cancelled on request' ELSE error_message END,
    cancel_requested_at = now(), updated_at = now()
WHERE job_id = $1 AND status IN ('pending', 'in_progress')
RETURNING *
"""

RETRY = """
UPDATE export_jobs
SET status = 'pending', attempt = attempt + 1, deliveries = 0, steps_completed = 0,
    progress_percentage = 0, current_step = NULL, error_code = NULL, error_message = NULL,
    package_path = NULL, package_size_bytes = NULL, package_sha256 = NULL,
    package_expired_at = NULL, started_at = NULL, completed_at = NULL, worker_id = NULL,
    heartbeat_at = NULL, cancel_requested_at = NULL, updated_at = now()
WHERE job_id = $1 AND status IN ('failed', 'rolled_back', 'cancelled')
  AND worker_id IS NULL  -- not while a worker is still rolling the last attempt back
RETURNING *
"""

# Running jobs whose worker stopped heartbeating for two leases: the redelivered message
# normally resumes them sooner; this catches the rest (a message the broker dropped).
ORPHANS = """
SELECT * FROM export_jobs
WHERE status IN ('in_progress', 'cancelling')
  AND heartbeat_at < now() - make_interval(secs => $1)
ORDER BY heartbeat_at
LIMIT $2
FOR UPDATE SKIP LOCKED
"""

RELEASE_ORPHAN = """
UPDATE export_jobs SET worker_id = NULL, heartbeat_at = now(), updated_at = now()
WHERE job_id = $1
"""

# Lets a graceful shutdown hand a job to another worker at once, without waiting for a lease.
RELEASE = """
UPDATE export_jobs SET worker_id = NULL, heartbeat_at = NULL, current_step = NULL,
       updated_at = now()
WHERE job_id = $1 AND worker_id = $2 AND status IN ('in_progress', 'cancelling')
"""

INSERT_EVENT = "INSERT INTO export_job_events (job_id, kind, detail) VALUES ($1, $2, $3)"

EVENTS = """
SELECT event_id, kind, detail, created_at FROM export_job_events
WHERE job_id = $1 AND event_id > $2 ORDER BY event_id LIMIT $3
"""

COUNT_BY_STATUS = "SELECT status::text, count(*) FROM export_jobs GROUP BY status"

# A page of job history, newest first. The WHERE clause is assembled from LIST_FILTERS only,
# values always as $n parameters. With `user_id` given and the cursor as a row comparison, a
# page is one range scan of idx_export_jobs_user_created however deep it is, and jobs created
# meanwhile sort before the cursor, so they never shift a page.
LIST_JOBS = """
SELECT * FROM export_jobs
WHERE {where}
ORDER BY created_at DESC, job_id DESC
LIMIT {limit}
"""

LIST_FILTERS = {
    "user_id": "user_id = {}",
    "statuses": "status = ANY({}::export_job_status[])",
    "tool_id": "tool_id = {}",
    "created_after": "created_at >= {}",
    "created_before": "created_at < {}",
    "cursor": "(created_at, job_id) < ({}, {})",
}

# Whether the callback for one terminal status of one attempt went out already (or gave up).
CALLBACK_DONE = """
SELECT 1 FROM export_job_events
WHERE job_id = $1 AND kind IN ('callback_delivered', 'callback_failed')
  AND detail->>'attempt' = $2 AND detail->>'status' = $3
LIMIT 1
"""


async def get_job(conn: Executor, job_id: UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(GET_JOB, job_id)


@dataclass(frozen=True)
class JobFilter:
    """What a history listing is narrowed to; None means no restriction."""

    user_id: UUID | None = None
    statuses: tuple[str, ...] = ()
    tool_id: UUID | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None


def list_query(where: JobFilter, cursor: tuple[datetime, UUID] | None, limit: int) -> tuple[str, list[Any]]:
    """LIST_JOBS with the filters that apply, and its parameters."""
    clauses: list[str] = []
    args: list[Any] = []

    def add(name: str, *values: Any) -> None:
        slots = [f"${len(args) + i + 1}" for i in range(len(values))]
        clauses.append(LIST_FILTERS[name].format(*slots))
        args.extend(values)

    if where.user_id is not None:
        add("user_id", where.user_id)
    if where.statuses:
        add("statuses", list(where.statuses))
    if where.tool_id is not None:
        add("tool_id", where.tool_id)
    if where.created_after is not None:
        add("created_after", where.created_after)
    if where.created_before is not None:
        add("created_before", where.created_before)
    if cursor is not None:
        add("cursor", *cursor)
    args.append(limit)
    sql = LIST_JOBS.format(where=" AND ".join(clauses) or "true", limit=f"${len(args)}")
    return sql, args


async def list_jobs(
    conn: Executor, where: JobFilter, cursor: tuple[datetime, UUID] | None, limit: int
) -> list[asyncpg.Record]:
    sql, args = list_query(where, cursor, limit)
    return list(await conn.fetch(sql, *args))


async def add_event(conn: Executor, job_id: UUID, kind: str, **detail: Any) -> None:
    """Append to the job's audit trail."""
    await conn.execute(INSERT_EVENT, job_id, kind, _jsonable(detail))


def _jsonable(detail: dict[str, Any]) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, UUID | datetime) else v) for k, v in detail.items()}


def progress_percentage(steps_done: int, steps_total: int, fraction: float = 0.0) -> int:
    """Whole percent done; 100 only once the job completes, so a bar never sits at 100."""
    if steps_total <= 0:
        return 0
    value = int(100 * (steps_done + max(0.0, min(fraction, 1.0))) / steps_total)
    return max(0, min(value, 99))


async def request_cancel(conn: Executor, job_id: UUID) -> asyncpg.Record | None:
    """Cancel a pending job at once or ask its worker to stop; None if it already finished.

    Call inside a transaction: the NOTIFY reaches the worker only when it commits.
    """
    row = await conn.fetchrow(REQUEST_CANCEL, job_id)
    if row is not None:
        await conn.execute("SELECT pg_notify('exporter_cancel', $1)", str(job_id))
        await add_event(conn, job_id, "cancel_requested", status=row["status"])
    return row


# Retention. SKIP LOCKED lets several cleanups run at once without touching the same job.
EXPIRE_PACKAGES = """
UPDATE export_jobs SET package_expired_at = now(), updated_at = now()
WHERE job_id IN (
    SELECT job_id FROM export_jobs
    WHERE status = 'completed' AND package_expired_at IS NULL AND package_path IS NOT NULL
      AND completed_at < now() - make_interval(days => $1)
    ORDER BY completed_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED)
RETURNING job_id, package_path
"""

DELETE_OLD_JOBS = """
DELETE FROM export_jobs
WHERE job_id IN (
    SELECT job_id FROM export_jobs
    WHERE status IN ('completed', 'failed', 'rolled_back', 'cancelled')
      AND coalesce(completed_at, updated_at) < now() - make_interval(days => $1)
    ORDER BY created_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED)
RETURNING job_id, package_path, package_expired_at
"""
