"""PostgreSQL connections: one pool per process, JSON decoded to Python on the way out."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from service.config import Settings

__all__ = ["Executor", "connect", "create_pool"]

# Anything queries can run on: a pool, a connection, or a connection borrowed from a pool.
Executor = asyncpg.Pool | asyncpg.Connection | PoolConnectionProxy


async def _init(conn: asyncpg.Connection) -> None:
    for name in ("json", "jsonb"):
        await conn.set_type_codec(name, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Release without asyncpg's default RESET ALL / UNLISTEN / CLOSE ALL round trip.

    Pooled connections never change session state: LISTEN and advisory locks use their own
    connections (`connect`), settings are only ever SET LOCAL, cursors live in transactions.
    asyncpg still rolls back a transaction left open before calling this. The default reset
    was one extra round trip on every release, a sizeable share of a short job's time.
    """


async def create_pool(settings: Settings, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    """A pool whose connections decode json/jsonb columns."""
    pool = await asyncpg.create_pool(
        settings.database_url, min_size=min_size, max_size=max_size, init=_init, reset=_keep_session
    )
    assert pool is not None
    return pool


async def connect(settings: Settings, **kwargs: Any) -> asyncpg.Connection:
    """A single connection (migrations, LISTEN), with the same codecs as the pool."""
    conn: asyncpg.Connection = await asyncpg.connect(settings.database_url, **kwargs)
    await _init(conn)
    return conn


async def ensure_database(settings: Settings) -> bool:
    """Create the database named in DATABASE_URL if it doesn't exist; True if created."""
    from urllib.parse import urlparse, urlunparse

    try:
        conn = await asyncpg.connect(settings.database_url)
    except asyncpg.InvalidCatalogNameError:
        pass
    else:
        await conn.close()
        return False
    parsed = urlparse(settings.database_url)
    name = parsed.path.lstrip("/")
    admin = await asyncpg.connect(urlunparse(parsed._replace(path="/postgres")))
    try:
        quoted = '"' + name.replace('"', '""') + '"'
        await admin.execute(f"CREATE DATABASE {quoted}")
    except asyncpg.DuplicateDatabaseError:
        return False
    finally:
        await admin.close()
    return True
