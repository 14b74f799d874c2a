"""200 submissions through the API while RabbitMQ keeps closing the service's connections:
afterwards every job completed exactly once, with one package and one `completed` event."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections import Counter
from pathlib import Path
from uuid import UUID

import asyncpg
import httpx
import pytest

from service.config import Settings
from service.messages import Topology
from tests.support.api import bearer
from tests.support.data import create_tool, create_user
from tests.support.processes import running
from tests.support.rabbit import close_connections, tap

JOBS = 200
RECORDS = [{"email": f"user{i}@example.com", "n": i} for i in range(20)]


async def _keep_closing(settings: Settings, stop: asyncio.Event, closed: list[int]) -> None:
    """Close the service's connections every 1.5 s, as `rabbitmqctl close_all_connections` would."""
    while not stop.is_set():
        closed.append(await asyncio.to_thread(close_connections, settings))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.5)


async def _submit_all(client: httpx.AsyncClient, tool: UUID) -> list[UUID]:
    gate = asyncio.Semaphore(8)

    async def one() -> UUID:
        async with gate:
            created = await client.post("/v1/exports", json={"tool_id": str(tool), "format": "bundle"})
            assert created.status_code == 202, created.text
            return UUID(created.json()["job_id"])

    return list(await asyncio.gather(*(one() for _ in range(JOBS))))


async def _all_done(pool: asyncpg.Pool, ids: list[UUID]) -> bool:
    query = "SELECT count(*) FROM export_jobs WHERE job_id = ANY($1::uuid[]) AND status = 'completed'"
    return bool(await pool.fetchval(query, ids) == len(ids))


async def _wait(pool: asyncpg.Pool, ids: list[UUID], timeout: float) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while True:
        rows = await pool.fetch(
            "SELECT status::text, count(*) FROM export_jobs WHERE job_id = ANY($1::uuid[]) GROUP BY 1", ids
        )
        by_status = {r["status"]: r["count"] for r in rows}
        if by_status.get("completed", 0) + by_status.get("failed", 0) + by_status.get(
            "rolled_back", 0
        ) == len(ids):
            return by_status
        if time.monotonic() > deadline:
            raise AssertionError(f"jobs not finished after {timeout}s: {by_status}")
        await asyncio.sleep(0.2)


@pytest.mark.slow
async def test_200_submissions_while_connections_keep_closing(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    user = await create_user(pool, ["exporter"])
    tool = await create_tool(pool, user, "forms", records=RECORDS)
    closed: list[int] = []
    with running(settings, tmp_path, workers=2) as (api, _workers):
        assert api is not None
        events_exchange = Topology(settings.topology_prefix).events
        async with (
            tap(settings.amqp_url, events_exchange, "export.completed") as events,
            httpx.AsyncClient(
                base_url=api.url, headers=bearer(settings, user, ["exporter"]), timeout=30
            ) as client,
        ):
            stop = asyncio.Event()
            chaos = asyncio.create_task(_keep_closing(settings, stop, closed))
            try:
                ids = await _submit_all(client, tool)
                # Keep it up until the jobs are done (at least 8 rounds), then let things settle.
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline and (len(closed) < 8 or not await _all_done(pool, ids)):
                    await asyncio.sleep(0.2)
            finally:
                stop.set()
                await chaos
            by_status = await _wait(pool, ids, timeout=240)
            backlog_gone = time.monotonic() + 60
            while len(events.messages) < JOBS and time.monotonic() < backlog_gone:
                await asyncio.sleep(0.2)
            await asyncio.sleep(2)  # a duplicate event would arrive by now

    assert sum(closed) >= 8, closed  # the chaos really hit the service
    assert by_status == {"completed": JOBS}, by_status

    # Exactly once: one `completed` in each job's trail, one event row, one event on the wire.
    trail = await pool.fetch(
        "SELECT job_id, count(*) AS n FROM export_job_events WHERE kind = 'completed' GROUP BY job_id"
    )
    assert {r["job_id"]: r["n"] for r in trail} == dict.fromkeys(ids, 1)
    rows = await pool.fetch(
        "SELECT body->>'job_id' AS job_id FROM export_outbox WHERE exchange = 'events'"
        " AND routing_key = 'export.completed'"
    )
    assert Counter(r["job_id"] for r in rows) == Counter(str(i) for i in ids)
    on_the_wire = Counter(body["job_id"] for body in events.bodies())
    assert set(on_the_wire) == {str(i) for i in ids}
    assert max(on_the_wire.values()) == 1, [j for j, n in on_the_wire.items() if n > 1]

    # One package each, in storage, matching its recorded checksum.
    packages = sorted((settings.storage_dir / "packages").rglob("*.zip"))
    assert len(packages) == JOBS
    jobs = {
        str(r["job_id"]): r
        for r in await pool.fetch(
            "SELECT job_id, tool_id, package_path, package_size_bytes, package_sha256 FROM export_jobs"
        )
    }
    for job in jobs.values():
        path = settings.storage_dir / "packages" / job["package_path"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == job["package_sha256"]
    # The events say which job, which tool, and what package came out.
    for event in events.bodies():
        job = jobs[event["job_id"]]
        assert (event["status"], event["tool_id"]) == ("completed", str(job["tool_id"]))
        assert (event["package_size_bytes"], event["package_sha256"]) == (
            job["package_size_bytes"],
            job["package_sha256"],
        )
