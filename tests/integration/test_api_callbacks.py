"""Callbacks: the terminal state POSTed once to `options.callback_url`, signed, retried on 5xx."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from uuid import UUID

import aio_pika
import asyncpg

from service import callbacks
from service.config import Settings
from service.runner import connect_broker
from tests.support.api import api_client, bearer
from tests.support.data import create_tool, create_user
from tests.support.jobs import scripted, scripted_tool, wait_status
from tests.support.receiver import Receiver, receiver
from tests.support.worker import worker_running


@asynccontextmanager
async def sender(settings: Settings, pool: asyncpg.Pool) -> AsyncIterator[callbacks.CallbackSender]:
    stop = asyncio.Event()
    broker = await connect_broker(settings, stop)
    assert broker is not None
    running = callbacks.CallbackSender(settings, pool, broker, attempts=4, backoff=0.05)
    task = asyncio.create_task(running.run(stop))
    await asyncio.wait_for(running.ready.wait(), 10)
    try:
        yield running
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        async with broker.connection.channel() as channel:  # type: ignore[union-attr]
            await channel.queue_delete(running.queue_name)
        await broker.close()


async def settle(r: Receiver, count: int, timeout: float = 15) -> None:
    async def wait() -> None:
        while len(r.requests) < count:
            r.got.clear()
            await r.got.wait()

    await asyncio.wait_for(wait(), timeout)
    await asyncio.sleep(0.5)  # room for a wrong extra POST to show up


async def test_a_cancelled_job_is_posted_once_signed_after_a_retry(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    user = await create_user(pool, ["exporter"])
    tool = await create_tool(pool, user)
    headers = bearer(settings, user, ["exporter"])
    async with receiver(503, 200) as hook, api_client(settings) as client, sender(settings, pool):
        created = await client.post(
            "/v1/exports",
            json={"tool_id": str(tool), "format": "bundle", "options": {"callback_url": hook.url}},
            headers=headers,
        )
        assert created.status_code == 202, created.text
        job_id = created.json()["job_id"]
        assert created.json()["options"] == {"callback_url": hook.url}
        assert (await client.post(f"/v1/exports/{job_id}/cancel", headers=headers)).status_code == 202
        await settle(hook, 2)
    assert len(hook.requests) == 2  # one 503, retried once, then delivered: never again
    for headers_seen, body in hook.requests:
        assert callbacks.verify(callbacks.signing_key(settings), body, headers_seen["x-export-signature"])
        assert headers_seen["x-export-event"] == "export.cancelled"
        assert headers_seen["content-type"] == "application/json"
    payload = json.loads(hook.requests[-1][1])
    assert payload["job_id"] == job_id and payload["status"] == "cancelled"
    assert payload["delivery_id"] == f"{job_id}:1:cancelled"
    kinds = await pool.fetch(
        "SELECT kind, detail FROM export_job_events WHERE job_id = $1 ORDER BY event_id", job_id
    )
    assert [k["kind"] for k in kinds][-1] == "callback_delivered"
    message = await pool.fetchrow("SELECT body FROM export_outbox WHERE exchange = 'requests'")
    assert message["body"]["options"] == {}  # the worker never sees the callback URL


async def test_a_duplicate_event_is_not_posted_again(settings: Settings, pool: asyncpg.Pool) -> None:
    user = await create_user(pool, ["exporter"])
    tool = await create_tool(pool, user)
    headers = bearer(settings, user, ["exporter"])
    async with receiver() as hook, api_client(settings) as client, sender(settings, pool) as running:
        created = await client.post(
            "/v1/exports",
            json={"tool_id": str(tool), "format": "bundle", "options": {"callback_url": hook.url}},
            headers=headers,
        )
        job_id = created.json()["job_id"]
        await client.post(f"/v1/exports/{job_id}/cancel", headers=headers)
        await settle(hook, 1)
        event = await pool.fetchrow("SELECT routing_key, body FROM export_outbox WHERE exchange = 'events'")
        async with running.broker.connection.channel() as channel:  # type: ignore[union-attr]
            exchange = await channel.get_exchange(running.broker.topology.events)
            await exchange.publish(aio_pika.Message(json.dumps(event["body"]).encode()), event["routing_key"])
        await asyncio.sleep(1)
        assert await running.handle(UUID(job_id), 1, "cancelled") == "duplicate"
    assert len(hook.requests) == 1


async def test_a_refusing_receiver_is_given_up_on_and_recorded(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    user = await create_user(pool, ["exporter"])
    tool = await create_tool(pool, user)
    headers = bearer(settings, user, ["exporter"])
    async with receiver(410) as hook, api_client(settings) as client, sender(settings, pool):
        created = await client.post(
            "/v1/exports",
            json={"tool_id": str(tool), "format": "bundle", "options": {"callback_url": hook.url}},
            headers=headers,
        )
        await client.post(f"/v1/exports/{created.json()['job_id']}/cancel", headers=headers)
        await settle(hook, 1)
        await asyncio.sleep(0.5)
    assert len(hook.requests) == 1  # a 4xx is an answer: no retries
    detail = await pool.fetchval(
        "SELECT detail FROM export_job_events WHERE job_id = $1 AND kind = 'callback_failed'",
        created.json()["job_id"],
    )
    assert detail["status"] == "cancelled" and "410" in detail["error"]


async def test_invalid_callback_urls_are_refused_at_submit(settings: Settings, pool: asyncpg.Pool) -> None:
    user = await create_user(pool, ["exporter"])
    tool = await create_tool(pool, user)
    async with api_client(settings, with_relay=False) as client:
        for url in ("ftp://example.com/x", "http://user:pw@example.com/", 5):
            response = await client.post(
                "/v1/exports",
                json={"tool_id": str(tool), "format": "bundle", "options": {"callback_url": url}},
                headers=bearer(settings, user, ["exporter"]),
            )
            assert response.status_code == 422
            assert response.json()["error"]["code"] == "invalid_callback_url"
    assert await pool.fetchval("SELECT count(*) FROM export_jobs") == 0


async def test_a_job_run_by_a_worker_calls_back_when_completed(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    settings = scripted(settings)
    user, tool = await scripted_tool(pool, tmp_path / "journal")
    async with (
        receiver() as hook,
        api_client(settings) as client,
        sender(settings, pool),
        worker_running(settings),
    ):
        created = await client.post(
            "/v1/exports",
            json={"tool_id": str(tool), "format": "package", "options": {"callback_url": hook.url}},
            headers=bearer(settings, user, ["exporter"]),
        )
        job_id = created.json()["job_id"]
        row = await wait_status(pool, UUID(job_id))
        assert row["status"] == "completed", dict(row)
        await settle(hook, 1)
    payload: dict[str, Any] = json.loads(hook.requests[0][1])
    assert payload["status"] == "completed" and payload["package_sha256"] == row["package_sha256"].strip()
    assert len(hook.requests) == 1
