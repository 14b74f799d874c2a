"""The /v1/exports endpoints: submit, status, history, cancel and retry.

Downloads and live events have modules of their own; `router` gathers them all for the app.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID, uuid4

from fastapi import APIRouter, Header, Query, Request, Response
from pydantic import BaseModel, ValidationError

from service import callbacks, jobs, metrics, outbox
from service.api import downloads, events
from service.api.deps import (
    PoolDep,
    PrincipalDep,
    RegistryDep,
    SettingsDep,
    errors,
    visible_job,
)
from service.api.downloads import public_job
from service.api.polling import check_rate, etag_for, etag_matches, retry_after_hint
from service.api.schemas import CreateExport, JobOut
from service.errors import Conflict, Forbidden, InvalidInput, NotFound
from service.jobs import JobStatus
from service.messages import REQUESTED_KEY, job_event, new_request
from service.strategies import FORMATS
from service.tools import get_tool

__all__ = ["JobList", "router"]

exports = APIRouter(prefix="/v1/exports", tags=["exports"])

STATUS_HEADERS = {
    "ETag": {"description": "validator for If-None-Match", "schema": {"type": "string"}},
    "Retry-After": {
        "description": "seconds until the next poll is worth it (absent once terminal)",
        "schema": {"type": "integer"},
    },
}


class JobList(BaseModel):
    """A page of jobs, newest first; pass `next_cursor` back as `cursor` for the next page."""

    items: list[JobOut]
    next_cursor: str | None


def request_hash(body: CreateExport) -> str:
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@exports.post(
    "",
    status_code=202,
    response_model=JobOut,
    responses={
        202: {"headers": {"Location": {"description": "the job's URL", "schema": {"type": "string"}}}},
        **errors(401, 403, 404, 409, 422),
    },
)
async def create_export(
    body: CreateExport,
    response: Response,
    principal: PrincipalDep,
    pool: PoolDep,
    registry: RegistryDep,
    settings: SettingsDep,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> JobOut:
    """Accept an export: the job row and its message are written in one transaction.

    `options.callback_url` (optional, http/https) is POSTed the job's terminal state, signed
    with HMAC-SHA256 in `X-Export-Signature`.
    """
    principal.require_create()
    if body.format not in FORMATS:
        raise InvalidInput(
            f"unknown format {body.format!r}; expected one of {', '.join(FORMATS)}",
            code="unknown_format",
        )
    tool = await get_tool(pool, body.tool_id)
    if tool is None or not principal.can_see(tool.owner_id):
        raise NotFound(f"tool {body.tool_id} not found", code="unknown_tool")
    strategy = registry.get((tool.type, body.format))
    if strategy is None:
        supported = sorted(f for (t, f) in registry if t == tool.type)
        raise InvalidInput(
            f"format {body.format!r} is not supported for {tool.type} tools "
            f"(supported: {', '.join(supported)})",
            code="unsupported_format",
        )
    # The callback URL is the API's business, not the strategy's: validated here, kept in
    # the job's options, and left out of the message the worker validates.
    own_options, callback_url = callbacks.split_options(body.options)
    try:
        options = strategy.options.model_validate(own_options).model_dump(mode="json", exclude_unset=True)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidInput(f"options.{where}: {first['msg']}", code="invalid_options") from None
    stored = {**options, callbacks.CALLBACK_OPTION: callback_url} if callback_url else options

    digest = request_hash(body)
    job_id = uuid4()
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            jobs.INSERT_JOB,
            job_id,
            tool.tool_id,
            principal.user_id,
            body.format,
            stored,
            len(strategy.steps),
            idempotency_key,
            digest,
            1,
        )
        if row is None:  # the idempotency key was used before
            row = await conn.fetchrow(jobs.GET_BY_IDEMPOTENCY_KEY, principal.user_id, idempotency_key)
            if row is None or row["request_hash"] != digest:
                raise Conflict(
                    "this Idempotency-Key was used with a different request",
                    code="idempotency_key_reused",
                )
        else:
            message = new_request(job_id, tool.tool_id, principal.user_id, body.format, options, 1)
            await outbox.enqueue(conn, "requests", REQUESTED_KEY, str(job_id), message.body())
            await jobs.add_event(conn, job_id, "created", source="api")
            metrics.JOBS_SUBMITTED.labels(tool.type, body.format).inc()
    response.headers["Location"] = f"/v1/exports/{row['job_id']}"
    return public_job(row, settings, principal)


@exports.get(
    "/{job_id}",
    response_model=JobOut,
    responses={
        200: {"headers": STATUS_HEADERS},
        304: {"description": "unchanged since the ETag given in If-None-Match", "headers": STATUS_HEADERS},
        **errors(401, 404, 422, 429),
    },
)
async def get_export(
    job_id: UUID,
    request: Request,
    principal: PrincipalDep,
    pool: PoolDep,
    settings: SettingsDep,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """The job's status and progress.

    Poll with If-None-Match (304 while nothing changed) and wait as long as Retry-After says:
    short near the start and the end of a job, longer in the middle. Limited per user to
    EXPORTER_STATUS_RATE_LIMIT requests a second (default 10; 429 with Retry-After beyond),
    counted in each API process's memory, so N processes allow up to N times that.
    """
    check_rate(request, principal.user_id)
    row = await visible_job(pool, principal, job_id)
    body = public_job(row, settings, principal).model_dump_json().encode()
    headers = {"ETag": etag_for(body), "Cache-Control": "private, no-cache"}
    hint = retry_after_hint(row["status"], row["progress_percentage"])
    if hint is not None:
        headers["Retry-After"] = str(hint)
    if etag_matches(if_none_match, headers["ETag"]):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)


def encode_cursor(row: Any) -> str:
    raw = json.dumps([row["created_at"].isoformat(), str(row["job_id"])]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    """The (created_at, job_id) of the last item of the previous page, or InvalidInput."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, job_id = json.loads(raw)
        at = datetime.fromisoformat(created)
        if at.tzinfo is None:
            raise ValueError("naive time")
        return at, UUID(job_id)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError, AttributeError):
        raise InvalidInput("cursor: not a cursor this API returned", code="invalid_cursor") from None


def _aware(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


@exports.get("", response_model=JobList, responses=errors(401, 403, 422))
async def list_exports(
    principal: PrincipalDep,
    pool: PoolDep,
    settings: SettingsDep,
    status: Annotated[list[JobStatus] | None, Query(description="repeat for several")] = None,
    tool_id: UUID | None = None,
    created_after: Annotated[datetime | None, Query(description="inclusive")] = None,
    created_before: Annotated[datetime | None, Query(description="exclusive")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    all_users: Annotated[bool, Query(alias="all", description="admins: every user's jobs")] = False,
) -> JobList:
    """The caller's jobs, newest first, in pages that stay stable while new jobs arrive."""
    if all_users and not principal.is_admin:
        raise Forbidden("only admins may list every user's jobs", code="forbidden")
    where = jobs.JobFilter(
        user_id=None if all_users else principal.user_id,
        statuses=tuple(s.value for s in status or ()),
        tool_id=tool_id,
        created_after=_aware(created_after),
        created_before=_aware(created_before),
    )
    after = decode_cursor(cursor) if cursor else None
    rows = await jobs.list_jobs(pool, where, after, limit + 1)  # one more: is there a next page?
    page = rows[:limit]
    return JobList(
        items=[public_job(r, settings, principal) for r in page],
        next_cursor=encode_cursor(page[-1]) if len(rows) > limit else None,
    )


@exports.post(
    "/{job_id}/cancel", status_code=202, response_model=JobOut, responses=errors(401, 404, 409, 422)
)
async def cancel_export(
    job_id: UUID, principal: PrincipalDep, pool: PoolDep, settings: SettingsDep
) -> JobOut:
    """Cancel: a pending job at once (`cancelled`), a running one asks its worker to stop
    (`cancelling`, within about 2 s); 409 once the job has finished."""
    async with pool.acquire() as conn, conn.transaction():
        current = await visible_job(conn, principal, job_id)
        row = await jobs.request_cancel(conn, job_id)  # NOTIFY goes out with the commit
        if row is None:
            current = await jobs.get_job(conn, job_id) or current  # what it is now, not then
            if current["status"] == JobStatus.CANCELLING:
                return public_job(current, settings, principal)  # asked already: same answer
            raise Conflict(
                f"export {job_id} is {current['status']}; it can no longer be cancelled",
                code="job_finished",
            )
        if row["status"] == JobStatus.CANCELLED:  # it never started: announce the end here
            await outbox.enqueue(conn, "events", *job_event(row))
    return public_job(row, settings, principal)


@exports.post(
    "/{job_id}/retry", status_code=202, response_model=JobOut, responses=errors(401, 403, 404, 409, 422)
)
async def retry_export(job_id: UUID, principal: PrincipalDep, pool: PoolDep, settings: SettingsDep) -> JobOut:
    """Run a failed, rolled back or cancelled job again as its next attempt; 409 otherwise."""
    async with pool.acquire() as conn, conn.transaction():
        current = await visible_job(conn, principal, job_id)
        principal.require_create()
        row = await conn.fetchrow(jobs.RETRY, job_id)
        if row is None:
            raise Conflict(
                f"export {job_id} is {current['status']}; only failed, rolled_back or cancelled "
                "exports can be retried",
                code="not_retryable",
            )
        if row["user_id"] is None:  # owner deleted: no one to run it for (rolls back)
            raise Conflict(f"export {job_id} has no owner any more", code="not_retryable")
        message = new_request(
            job_id,
            row["tool_id"],
            row["user_id"],
            row["format"],
            callbacks.strategy_options(row["options"] or {}),
            row["attempt"],
        )
        await outbox.enqueue(conn, "requests", REQUESTED_KEY, str(job_id), message.body())
        await jobs.add_event(conn, job_id, "retry_requested", attempt=row["attempt"], source="api")
    return public_job(row, settings, principal)


router = APIRouter()
router.include_router(exports)
router.include_router(downloads.router)
router.include_router(events.router)
