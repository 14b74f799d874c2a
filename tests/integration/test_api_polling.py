"""Status polling: ETag and 304, a Retry-After hint that follows progress, 429 per user."""

from __future__ import annotations

import asyncpg

from service.config import Settings
from tests.support.api import api_client, bearer
from tests.support.data import create_tool, create_user
from tests.support.exports import insert_job


async def test_unchanged_status_is_304_until_the_job_moves(settings: Settings, pool: asyncpg.Pool) -> None:
    user = await create_user(pool, ["exporter"])
    tool = await create_tool(pool, user)
    job_id = await insert_job(pool, user, tool, "in_progress", progress=50)
    headers = bearer(settings, user, ["exporter"])
    async with api_client(settings, with_relay=False) as client:
        first = await client.get(f"/v1/exports/{job_id}", headers=headers)
        etag = first.headers["etag"]
        same = await client.get(f"/v1/exports/{job_id}", headers={**headers, "If-None-Match": etag})
        await pool.execute(
            "UPDATE export_jobs SET progress_percentage = 95, updated_at = now() WHERE job_id = $1", job_id
        )
        moved = await client.get(f"/v1/exports/{job_id}", headers={**headers, "If-None-Match": etag})
    assert first.status_code == 200 and first.json()["progress_percentage"] == 50
    assert same.status_code == 304 and same.content == b""
    assert same.headers["etag"] == etag
    assert moved.status_code == 200 and moved.json()["progress_percentage"] == 95
    assert moved.headers["etag"] != etag
    assert first.headers["retry-after"] == "3"  # the middle: poll slowly
    assert same.headers["retry-after"] == "3"
    assert moved.headers["retry-after"] == "1"  # near the end: poll fast
    assert first.headers["cache-control"] == "private, no-cache"


async def test_terminal_status_has_no_retry_after(settings: Settings, pool: asyncpg.Pool) -> None:
    user = await create_user(pool, ["exporter"])
    tool = await create_tool(pool, user)
    headers = bearer(settings, user, ["exporter"])
    async with api_client(settings, with_relay=False) as client:
        pending = await client.get(f"/v1/exports/{await insert_job(pool, user, tool)}", headers=headers)
        failed = await client.get(
            f"/v1/exports/{await insert_job(pool, user, tool, 'failed')}", headers=headers
        )
    assert pending.headers["retry-after"] == "1"
    assert "retry-after" not in failed.headers and "etag" in failed.headers


async def test_status_is_rate_limited_per_user(settings: Settings, pool: asyncpg.Pool) -> None:
    settings = settings.model_copy(update={"status_rate_limit": 5})
    greedy = await create_user(pool, ["exporter"])
    patient = await create_user(pool, ["exporter"])
    tool = await create_tool(pool, greedy)
    job_id = await insert_job(pool, greedy, tool)
    async with api_client(settings, with_relay=False) as client:
        answers = [
            (
                await client.get(f"/v1/exports/{job_id}", headers=bearer(settings, greedy, ["exporter"]))
            ).status_code
            for _ in range(8)
        ]
        limited = await client.get(f"/v1/exports/{job_id}", headers=bearer(settings, greedy, ["exporter"]))
        other = await client.get(f"/v1/exports/{job_id}", headers=bearer(settings, patient, ["exporter"]))
        listing = await client.get("/v1/exports", headers=bearer(settings, greedy, ["exporter"]))
    assert answers[:5] == [200] * 5 and set(answers[5:]) == {429}
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "rate_limited"
    assert int(limited.headers["retry-after"]) >= 1
    assert other.status_code == 404  # another user's budget is their own (and the job isn't theirs)
    assert listing.status_code == 200  # only the status endpoint is limited
