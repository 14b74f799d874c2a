"""Request-scoped dependencies as `Annotated` aliases, and the owner-or-admin lookup."""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Annotated, Any
from uuid import UUID

import asyncpg
import jwt
from fastapi import Depends, Header, Request

from service import jobs
from service.api.auth import Principal, authenticate
from service.api.schemas import ErrorBody
from service.config import Settings
from service.db import Executor
from service.errors import NotFound
from service.storage import Storage
from service.strategies import Registry

__all__ = [
    "PoolDep",
    "PrincipalDep",
    "RegistryDep",
    "SettingsDep",
    "StorageDep",
    "errors",
    "visible_job",
]


# Async on purpose: FastAPI runs plain `def` dependencies in a thread pool, three thread
# hops per request for what are attribute lookups (and a JWT check that takes microseconds).
async def get_settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


async def get_pool(request: Request) -> asyncpg.Pool:
    pool: asyncpg.Pool = request.app.state.pool
    return pool


async def get_registry(request: Request) -> Registry:
    return request.app.state.registry  # type: ignore[no-any-return]


async def get_storage(request: Request) -> Storage:
    return request.app.state.storage  # type: ignore[no-any-return]


class VerifiedTokens:
    """Authorization headers this process verified already, each kept until its token expires.

    A client polling a job sends the same token every second or two, and PyJWT's decode is
    the costliest step of a status request. Only a header that passed `authenticate` with
    this app's secret gets in, and it stops counting at its own `exp`.
    """

    def __init__(self, max_size: int = 10_000) -> None:
        self.max_size = max_size
        self._seen: OrderedDict[str, tuple[Principal, float]] = OrderedDict()

    def principal(self, secret: str, authorization: str | None) -> Principal:
        now = time.time()
        if authorization is not None:
            hit = self._seen.get(authorization)
            if hit is not None and hit[1] > now:
                return hit[0]
        principal = authenticate(secret, authorization)  # raises for anything not valid
        assert authorization is not None
        token = authorization.partition(" ")[2].strip()
        expires = float(jwt.decode(token, options={"verify_signature": False})["exp"])
        self._seen[authorization] = (principal, expires)
        if len(self._seen) > self.max_size:
            self._seen.popitem(last=False)
        return principal


async def get_principal(
    request: Request,
    settings: Annotated[Settings, Depends(get_settings)],
    authorization: Annotated[str | None, Header()] = None,
) -> Principal:
    state = request.app.state
    tokens: VerifiedTokens | None = getattr(state, "verified_tokens", None)
    if tokens is None:
        tokens = state.verified_tokens = VerifiedTokens()
    return tokens.principal(settings.jwt_secret, authorization)


SettingsDep = Annotated[Settings, Depends(get_settings)]
PoolDep = Annotated[asyncpg.Pool, Depends(get_pool)]
RegistryDep = Annotated[Registry, Depends(get_registry)]
StorageDep = Annotated[Storage, Depends(get_storage)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries: each status answers with the JSON error body."""
    return {status: {"model": ErrorBody} for status in statuses}


def not_found(job_id: UUID) -> NotFound:
    # One message and code for a missing job and for someone else's: nothing tells them apart.
    return NotFound(f"export {job_id} not found", code="job_not_found")


async def visible_job(conn: Executor, principal: Principal, job_id: UUID) -> asyncpg.Record:
    """The job if the caller may see it; otherwise 404, the same as for a missing job."""
    row = await jobs.get_job(conn, job_id)
    if row is None or not principal.can_see(row["user_id"]):
        raise not_found(job_id)
    return row
