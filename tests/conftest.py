"""Shared fixtures: every test that touches PostgreSQL gets its own database (a copy of a
template migrated once per run), its own RabbitMQ names and its own storage directory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from service import migrations
from service.config import Settings
from service.db import create_pool
from tests.support import infra

TEST_SECRET = "test-secret-0123456789abcdef-0123456789"


@pytest.fixture(scope="session")
def servers() -> Iterator[tuple[str, str]]:
    try:
        with infra.services() as found:
            yield found
    except RuntimeError as exc:
        pytest.exit(str(exc), returncode=3)


@pytest.fixture(scope="session")
async def template_db(servers: tuple[str, str]) -> AsyncIterator[str]:
    """A database migrated once per run; each test copies it."""
    admin_url, _ = servers
    name = infra.unique_name("tmpl")
    await infra.create_database(admin_url, name)
    conn = await asyncpg.connect(infra.with_database(admin_url, name))
    try:
        await migrations.up(conn)
    finally:
        await conn.close()
    yield name
    await infra.drop_database(admin_url, name)


@pytest.fixture
async def settings(servers: tuple[str, str], template_db: str, tmp_path: Path) -> AsyncIterator[Settings]:
    """Settings pointing at a fresh database, a fresh topology prefix and a temp directory."""
    admin_url, amqp_url = servers
    name = infra.unique_name("db")
    await infra.create_database(admin_url, name, template=template_db)
    prefix = "t" + name.removeprefix("exporter_db_")
    built = Settings(
        database_url=infra.with_database(admin_url, name),
        amqp_url=amqp_url,
        topology_prefix=prefix,
        storage_dir=tmp_path / "storage",
        jwt_secret=TEST_SECRET,
        retry_backoff_seconds=0,
        heartbeat_seconds=0.5,
        lease_seconds=3,
        relay_poll_seconds=0.5,
        shutdown_grace_seconds=5,
        monitor_interval_seconds=1,
        http_port=0,
        metrics_port=0,
    )
    yield built
    await infra.delete_topology(amqp_url, prefix)
    await infra.drop_database(admin_url, name)


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(settings)
    yield p
    await asyncio.wait_for(p.close(), 10)
