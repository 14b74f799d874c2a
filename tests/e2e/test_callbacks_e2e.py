"""A worker process posts the terminal state to the job's callback_url, once, signed."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import asyncpg
import httpx

from service import callbacks
from service.config import Settings
from tests.support.api import bearer
from tests.support.data import create_tool, create_user
from tests.support.jobs import wait_status
from tests.support.processes import running
from tests.support.receiver import receiver


async def test_worker_process_calls_back_once_with_a_valid_signature(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    user = await create_user(pool, ["exporter"])
    tool = await create_tool(pool, user, "themes")
    async with receiver() as hook:
        with running(settings, tmp_path) as (api, _):
            assert api is not None
            async with httpx.AsyncClient(
                base_url=api.url, headers=bearer(settings, user, ["exporter"])
            ) as client:
                created = await client.post(
                    "/v1/exports",
                    json={"tool_id": str(tool), "format": "bundle", "options": {"callback_url": hook.url}},
                )
                assert created.status_code == 202, created.text
                job_id = created.json()["job_id"]
                row = await wait_status(pool, job_id)
                assert row["status"] == "completed"
                await asyncio.wait_for(hook.got.wait(), 20)
                await asyncio.sleep(1)  # a duplicate would arrive by now
    assert len(hook.requests) == 1
    headers, body = hook.requests[0]
    assert callbacks.verify(callbacks.signing_key(settings), body, headers.get("x-export-signature"))
    sent = json.loads(body)
    assert sent["job_id"] == job_id and sent["status"] == "completed"
