"""Idempotency-Key on POST /v1/exports: same key and body → the original job, once; another
body → 409; keys are per user."""

from __future__ import annotations

import asyncio

import asyncpg

from service.config import Settings
from tests.support.api import api_client, bearer
from tests.support.data import create_tool, create_user


async def test_a_resent_request_returns_the_original_job_and_queues_one_message(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    user = await create_user(pool, ["exporter"])
    tool = await create_tool(pool, user)
    headers = {**bearer(settings, user, ["exporter"]), "Idempotency-Key": "order-42"}
    body = {"tool_id": str(tool), "format": "bundle"}
    async with api_client(settings, with_relay=False) as client:
        answers = await asyncio.gather(
            *(client.post("/v1/exports", json=body, headers=headers) for _ in range(5))
        )
        changed = await client.post(
            "/v1/exports",
            json={**body, "options": {"callback_url": "http://hooks.example/x"}},
            headers=headers,
        )
        other_user = await create_user(pool, ["exporter"])
        other_tool = await create_tool(pool, other_user)
        theirs = await client.post(
            "/v1/exports",
            json={"tool_id": str(other_tool), "format": "bundle"},
            headers={**bearer(settings, other_user, ["exporter"]), "Idempotency-Key": "order-42"},
        )
    assert {a.status_code for a in answers} == {202}
    assert len({a.json()["job_id"] for a in answers}) == 1
    assert {a.headers["location"] for a in answers} == {f"/v1/exports/{answers[0].json()['job_id']}"}
    assert changed.status_code == 409
    assert changed.json()["error"]["code"] == "idempotency_key_reused"
    assert theirs.status_code == 202 and theirs.json()["job_id"] != answers[0].json()["job_id"]
    assert await pool.fetchval("SELECT count(*) FROM export_jobs WHERE user_id = $1", user) == 1
    assert await pool.fetchval("SELECT count(*) FROM export_outbox WHERE exchange = 'requests'") == 2


async def test_without_a_key_every_request_is_a_new_job(settings: Settings, pool: asyncpg.Pool) -> None:
    user = await create_user(pool, ["exporter"])
    tool = await create_tool(pool, user)
    body = {"tool_id": str(tool), "format": "bundle"}
    async with api_client(settings, with_relay=False) as client:
        first = await client.post("/v1/exports", json=body, headers=bearer(settings, user, ["exporter"]))
        second = await client.post("/v1/exports", json=body, headers=bearer(settings, user, ["exporter"]))
    assert first.json()["job_id"] != second.json()["job_id"]
