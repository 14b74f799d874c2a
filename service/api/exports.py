"""The /v1/exports endpoints."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any
from uuid import UUID, uuid4

import asyncpg
from fastapi import APIRouter, Depends, Header, Request, Response
from pydantic import ValidationError

from service import jobs, metrics, outbox
from service.api.auth import Principal, authenticate
from service.api.schemas import CreateExport, ErrorBody, JobOut, job_out
from service.config import Settings
from service.errors import Conflict, InvalidInput, NotFound
from service.messages import REQUESTED_KEY, new_request
from service.strategies import FORMATS, Registry
from service.tools import get_tool

__all__ = ["router"]

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (401, 403, 404, 409, 422, 429)
}


def get_settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def get_pool(request: Request) -> asyncpg.Pool:
    pool: asyncpg.Pool = request.app.state.pool
    return pool


def get_registry(request: Request) -> Registry:
    return request.app.state.registry  # type: ignore[no-any-return]


def get_principal(
    settings: Annotated[Settings, Depends(get_settings)],
    authorization: Annotated[str | None, Header()] = None,
) -> Principal:
    return authenticate(settings.jwt_secret, authorization)


SettingsDep = Annotated[Settings, Depends(get_settings)]
PoolDep = Annotated[asyncpg.Pool, Depends(get_pool)]
RegistryDep = Annotated[Registry, Depends(get_registry)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]

router = APIRouter(prefix="/v1/exports", tags=["exports"], responses=ERRORS)


def request_hash(body: CreateExport) -> str:
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@router.post("", status_code=202, response_model=JobOut)
async def create_export(
    body: CreateExport,
    response: Response,
    principal: PrincipalDep,
    pool: PoolDep,
    registry: RegistryDep,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> JobOut:
    """Accept an export: the job row and its message are written in one transaction."""
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
    try:
        options = strategy.options.model_validate(body.options).model_dump(mode="json", exclude_unset=True)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidInput(f"options.{where}: {first['msg']}", code="invalid_options") from None

    digest = request_hash(body)
    job_id = uuid4()
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            jobs.INSERT_JOB,
            job_id,
            tool.tool_id,
            principal.user_id,
            body.format,
            options,
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
    return job_out(row)


async def visible_job(pool: asyncpg.Pool, principal: Principal, job_id: UUID) -> asyncpg.Record:
    """The job if the caller may see it; otherwise 404, the same as for a missing job."""
    row = await jobs.get_job(pool, job_id)
    if row is None or not principal.can_see(row["user_id"]):
        raise NotFound(f"export {job_id} not found", code="job_not_found")
    return row


@router.get("/{job_id}", response_model=JobOut)
async def get_export(job_id: UUID, principal: PrincipalDep, pool: PoolDep) -> JobOut:
    """The job's status and progress."""
    return job_out(await visible_job(pool, principal, job_id))


@router.get(
    "/{job_id}/download",
    responses={200: {"content": {"application/octet-stream": {}}}, 410: {"model": ErrorBody}},
    response_class=Response,
)
async def download_export(job_id: UUID, request: Request, principal: PrincipalDep, pool: PoolDep) -> Response:
    """The finished package, streamed."""
    from fastapi.responses import StreamingResponse

    from service.errors import Gone

    row = await visible_job(pool, principal, job_id)
    if row["status"] != "completed":
        raise Conflict(f"export {job_id} is {row['status']}, not completed", code="not_completed")
    storage = request.app.state.storage
    key = row["package_path"]
    if row["package_expired_at"] is not None or not await storage.exists(key):
        raise Gone("the package was removed by retention", code="package_expired")
    filename = key.rsplit("/", 1)[-1]
    return StreamingResponse(
        storage.stream(key),
        media_type="application/zip" if filename.endswith(".zip") else "application/octet-stream",
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Content-Length": str(row["package_size_bytes"]),
        },
    )
