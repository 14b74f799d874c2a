"""Cancel and retry over HTTP: statuses of DESIGN.md, NOTIFY to the worker, messages via the outbox."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg

from service.config import Settings
from tests.support.api import api_client, bearer
from tests.support.data import create_tool, create_user
from tests.support.exports import insert_job
from tests.support.jobs import scripted, scripted_tool, submit, wait_status
from tests.support.worker import worker_running


async def outbox(pool: asyncpg.Pool, target: str) -> list[asyncpg.Record]:
    return list(
        await pool.fetch(
            "SELECT routing_key, message_id, body FROM export_outbox WHERE exchange = $1 ORDER BY outbox_id",
            target,
        )
    )


async def test_cancel_pending_is_immediate_and_announced(settings: Settings, pool: asyncpg.Pool) -> None:
    user = await create_user(pool, ["exporter"])
    tool = await create_tool(pool, user)
    headers = bearer(settings, user, ["exporter"])
    async with api_client(settings, with_relay=False) as client:
        created = await client.post(
            "/v1/exports", json={"tool_id": str(tool), "format": "bundle"}, headers=headers
        )
        job_id = created.json()["job_id"]
        response = await client.post(f"/v1/exports/{job_id}/cancel", headers=headers)
        again = await client.post(f"/v1/exports/{job_id}/cancel", headers=headers)
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "cancelled"
    assert response.json()["error_code"] == "cancelled"
    assert again.status_code == 409 and again.json()["error"]["code"] == "job_finished"
    events = await outbox(pool, "events")
    assert [e["routing_key"] for e in events] == ["export.cancelled"]
    assert events[0]["body"]["job_id"] == job_id
    kinds = await pool.fetch(
        "SELECT kind FROM export_job_events WHERE job_id = $1 ORDER BY event_id", created.json()["job_id"]
    )
    assert [k["kind"] for k in kinds] == ["created", "cancel_requested"]


async def test_cancel_running_notifies_the_worker_in_the_same_transaction(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    user = await create_user(pool, ["exporter"])
    tool = await create_tool(pool, user)
    job_id = await insert_job(pool, user, tool, "in_progress", progress=40)
    listener = await asyncpg.connect(settings.database_url)
    heard: asyncio.Queue[str] = asyncio.Queue()
    await listener.add_listener("exporter_cancel", lambda *args: heard.put_nowait(args[3]))
    headers = bearer(settings, user, ["exporter"])
    try:
        async with api_client(settings, with_relay=False) as client:
            response = await client.post(f"/v1/exports/{job_id}/cancel", headers=headers)
            assert response.status_code == 202
            assert response.json()["status"] == "cancelling"
            assert await asyncio.wait_for(heard.get(), 2) == str(job_id)
            again = await client.post(f"/v1/exports/{job_id}/cancel", headers=headers)
            assert again.status_code == 202 and again.json()["status"] == "cancelling"
    finally:
        await listener.close()
    assert await outbox(pool, "events") == []  # the worker announces `cancelled` when it stops


async def test_cancel_of_a_finished_job_is_409(settings: Settings, pool: asyncpg.Pool) -> None:
    user = await create_user(pool, ["exporter"])
    tool = await create_tool(pool, user)
    headers = bearer(settings, user, ["exporter"])
    async with api_client(settings, with_relay=False) as client:
        for status in ("completed", "failed", "rolled_back", "cancelled"):
            job_id = await insert_job(pool, user, tool, status)
            response = await client.post(f"/v1/exports/{job_id}/cancel", headers=headers)
            assert response.status_code == 409, status
            assert response.json()["error"]["code"] == "job_finished"
            assert (
                await pool.fetchval("SELECT status::text FROM export_jobs WHERE job_id = $1", job_id)
                == status
            )


async def test_retry_queues_the_next_attempt_in_one_transaction(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    user = await create_user(pool, ["exporter"])
    tool = await create_tool(pool, user)
    headers = bearer(settings, user, ["exporter"])
    async with api_client(settings, with_relay=False) as client:
        for status in ("failed", "rolled_back", "cancelled"):
            options = {"callback_url": "http://127.0.0.1:9/hook"}
            job_id = await insert_job(pool, user, tool, status, options=options)
            response = await client.post(f"/v1/exports/{job_id}/retry", headers=headers)
            assert response.status_code == 202, response.text
            job = response.json()
            assert job["status"] == "pending" and job["attempt"] == 2
            assert job["error_code"] is None and job["progress_percentage"] == 0
            messages = [m for m in await outbox(pool, "requests") if m["message_id"] == str(job_id)]
            assert len(messages) == 1
            body = messages[0]["body"]
            assert body["attempt"] == 2 and body["schema"] == "export.requested.v1"
            assert body["options"] == {}  # the callback URL is the API's, never the strategy's
            kinds = [
                r["kind"]
                for r in await pool.fetch("SELECT kind FROM export_job_events WHERE job_id = $1", job_id)
            ]
            assert kinds == ["retry_requested"]


async def test_retry_of_a_job_that_did_not_fail_is_409(settings: Settings, pool: asyncpg.Pool) -> None:
    user = await create_user(pool, ["exporter"])
    tool = await create_tool(pool, user)
    headers = bearer(settings, user, ["exporter"])
    async with api_client(settings, with_relay=False) as client:
        for status in ("pending", "in_progress", "cancelling", "completed"):
            job_id = await insert_job(pool, user, tool, status)
            response = await client.post(f"/v1/exports/{job_id}/retry", headers=headers)
            assert response.status_code == 409, status
            assert response.json()["error"]["code"] == "not_retryable"
    assert await outbox(pool, "requests") == []


async def test_cancel_reaches_a_running_worker_and_retry_runs_it_again(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    settings = scripted(settings)
    user, tool = await scripted_tool(pool, tmp_path / "journal", {"s2": {"sleep": 30}})
    headers = bearer(settings, user, ["exporter"])
    async with api_client(settings) as client, worker_running(settings):
        job_id = await submit(client, settings, user, tool)
        await wait_status(pool, job_id, {"in_progress"})
        while (await client.get(f"/v1/exports/{job_id}", headers=headers)).json()["steps_completed"] < 1:
            await asyncio.sleep(0.05)
        began = time.monotonic()
        response = await client.post(f"/v1/exports/{job_id}/cancel", headers=headers)
        assert response.status_code == 202 and response.json()["status"] == "cancelling"
        row = await wait_status(pool, job_id, {"cancelled"}, timeout=10)
        assert time.monotonic() - began < 2
        assert row["attempt"] == 1
        # Second attempt without the slow step: the scripted step reads metadata afresh.
        await pool.execute(
            "UPDATE tool_registry SET tool_metadata = tool_metadata - 'steps' WHERE tool_id = $1", tool
        )
        retried = await client.post(f"/v1/exports/{job_id}/retry", headers=headers)
        assert retried.status_code == 202 and retried.json()["attempt"] == 2
        done = await wait_status(pool, job_id, timeout=30)
    assert done["status"] == "completed" and done["attempt"] == 2
