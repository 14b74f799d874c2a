"""API, relay and workers reconnect after RabbitMQ drops them, without losing or duplicating
jobs; /readyz reports the broker down meanwhile."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from uuid import UUID

import asyncpg
import httpx

from service.config import Settings
from tests.support.api import bearer
from tests.support.data import create_tool, create_user
from tests.support.jobs import wait_status
from tests.support.processes import Proc, running
from tests.support.rabbit import BrokerProxy, close_connections


async def _submit(client: httpx.AsyncClient, tool: UUID, count: int) -> list[UUID]:
    ids = []
    for _ in range(count):
        created = await client.post("/v1/exports", json={"tool_id": str(tool), "format": "bundle"})
        assert created.status_code == 202, created.text
        ids.append(UUID(created.json()["job_id"]))
    return ids


async def _broker_check(proc: Proc) -> bool | None:
    async with httpx.AsyncClient(timeout=2) as client:
        try:
            response = await client.get(f"{proc.url}/readyz")
        except httpx.HTTPError:
            return None
    return bool(response.json()["checks"]["broker"])


async def _wait_broker(procs: list[Proc], up: bool, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = [await _broker_check(p) for p in procs]
        if all(state is up for state in states):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"/readyz never reported broker={up} on all of {[p.url for p in procs]}")


async def _completed_once(pool: asyncpg.Pool, ids: list[UUID]) -> None:
    for job_id in ids:
        row = await wait_status(pool, job_id, timeout=60)
        assert row["status"] == "completed", dict(row)
    counts = await pool.fetch(
        "SELECT job_id, count(*) FILTER (WHERE kind = 'completed') AS n FROM export_job_events"
        " WHERE job_id = ANY($1::uuid[]) GROUP BY job_id",
        ids,
    )
    assert {r["job_id"]: r["n"] for r in counts} == dict.fromkeys(ids, 1)
    events = await pool.fetchval(
        "SELECT count(*) FROM export_outbox WHERE exchange = 'events' AND routing_key = 'export.completed'"
    )
    assert events == len(ids)


async def test_closed_connections_are_reopened_and_jobs_keep_flowing(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    user = await create_user(pool, ["exporter"])
    tool = await create_tool(pool, user, "forms")
    with running(settings, tmp_path, workers=2) as (api, workers):
        assert api is not None
        procs = [api, *workers]
        async with httpx.AsyncClient(
            base_url=api.url, headers=bearer(settings, user, ["exporter"])
        ) as client:
            ids = await _submit(client, tool, 5)
            await _completed_once(pool, ids)

            assert close_connections(settings) == 3  # the API's and each worker's
            await _wait_broker(procs, up=False, timeout=3)
            ids += await _submit(client, tool, 5)  # accepted into the outbox meanwhile
            await _wait_broker(procs, up=True, timeout=30)
            ids += await _submit(client, tool, 5)
            await _completed_once(pool, ids)


async def test_a_broker_outage_is_survived_by_api_relay_and_workers(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    user = await create_user(pool, ["exporter"])
    tool = await create_tool(pool, user, "forms")
    with BrokerProxy(settings.amqp_url) as proxy:
        service = settings.model_copy(update={"amqp_url": proxy.url})
        with running(service, tmp_path, workers=2) as (api, workers):
            assert api is not None
            procs = [api, *workers]
            headers = bearer(settings, user, ["exporter"])
            async with httpx.AsyncClient(base_url=api.url, headers=headers) as client:
                ids = await _submit(client, tool, 5)
                proxy.down()  # RabbitMQ "stopped": connections cut, new ones refused
                await _wait_broker(procs, up=False, timeout=3)
                ids += await _submit(client, tool, 10)
                await asyncio.sleep(3)  # reconnect attempts fail meanwhile
                proxy.up()
                await _wait_broker(procs, up=True, timeout=30)
                ids += await _submit(client, tool, 5)
                await _completed_once(pool, ids)
