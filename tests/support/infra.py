"""Finding the real PostgreSQL and RabbitMQ the tests need, and giving each test its own.

Order: EXPORTER_TEST_DATABASE_URL / EXPORTER_TEST_AMQP_URL, then the 127.0.0.1 defaults,
then testcontainers when a Docker engine answers. Nothing found fails the run, loudly.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
from collections.abc import Iterator
from urllib.parse import urlparse, urlunparse

import aio_pika
import asyncpg

DEFAULT_DB = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_AMQP = "amqp://guest:guest@127.0.0.1:5672/"
HOW_TO = (
    "Integration tests need a real PostgreSQL and RabbitMQ. Start them locally "
    "(PostgreSQL on 127.0.0.1:5432 with trust auth, RabbitMQ on 127.0.0.1:5672 guest/guest), "
    "or set EXPORTER_TEST_DATABASE_URL and EXPORTER_TEST_AMQP_URL, "
    "or run a Docker engine so testcontainers can start them."
)


def _answers(url: str, default_port: int) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or default_port), 2):
            return True
    except OSError:
        return False


def _docker_answers() -> bool:
    try:
        import docker  # type: ignore[import-untyped]

        docker.from_env().ping()
        return True
    except Exception:
        return False


@contextlib.contextmanager
def services() -> Iterator[tuple[str, str]]:
    """Yield (admin database URL, AMQP URL) of servers that answer, or fail the run."""
    db = os.environ.get("EXPORTER_TEST_DATABASE_URL", DEFAULT_DB)
    amqp = os.environ.get("EXPORTER_TEST_AMQP_URL", DEFAULT_AMQP)
    if _answers(db, 5432) and _answers(amqp, 5672):
        yield db, amqp
        return
    if _docker_answers():
        from testcontainers.postgres import PostgresContainer
        from testcontainers.rabbitmq import RabbitMqContainer

        with (
            PostgresContainer("postgres:16-alpine", driver=None) as pg,
            RabbitMqContainer("rabbitmq:3.13-management-alpine") as mq,
        ):
            amqp_url = f"amqp://guest:guest@{mq.get_container_host_ip()}:{mq.get_exposed_port(5672)}/"
            yield pg.get_connection_url(), amqp_url
        return
    raise RuntimeError(HOW_TO)


def with_database(url: str, name: str) -> str:
    parsed = urlparse(url)
    return urlunparse(parsed._replace(path="/" + name))


def unique_name(kind: str) -> str:
    return f"exporter_{kind}_{os.getpid()}_{secrets.token_hex(4)}"


async def create_database(admin_url: str, name: str, template: str | None = None) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        clause = f' TEMPLATE "{template}"' if template else ""
        await conn.execute(f'CREATE DATABASE "{name}"{clause}')
    finally:
        await conn.close()


async def drop_database(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
    finally:
        await conn.close()


async def delete_topology(amqp_url: str, prefix: str) -> None:
    """Remove the queues and exchanges a test's prefix created."""
    try:
        connection = await aio_pika.connect(amqp_url, timeout=5)
    except Exception:
        return
    try:
        for queue in (f"{prefix}.requests", f"{prefix}.dead", f"{prefix}.callbacks"):
            # A failed delete closes the channel, so each gets its own.
            async with connection.channel() as channel:
                with contextlib.suppress(Exception):
                    await channel.queue_delete(queue)
        for exchange in (prefix, f"{prefix}.dlx", f"{prefix}.events", f"{prefix}.callback-events"):
            async with connection.channel() as channel:
                with contextlib.suppress(Exception):
                    await channel.exchange_delete(exchange)
    finally:
        await connection.close()
        await asyncio.sleep(0.01)
