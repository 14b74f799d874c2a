"""Owner-or-admin everywhere: another user can't see, list, cancel, retry, follow or download a
job, and the answer never tells whether the job exists."""

from __future__ import annotations

from urllib.parse import parse_qs, urlencode, urlsplit
from uuid import uuid4

import asyncpg
import httpx

from service.config import Settings
from tests.support.api import api_client, bearer
from tests.support.data import create_tool, create_user
from tests.support.exports import completed_job, insert_job

CONTENT = b"PK-not-really-a-zip but bytes all the same" * 10


def job_routes(job_id: object) -> list[tuple[str, str]]:
    return [
        ("GET", f"/v1/exports/{job_id}"),
        ("POST", f"/v1/exports/{job_id}/cancel"),
        ("POST", f"/v1/exports/{job_id}/retry"),
        ("GET", f"/v1/exports/{job_id}/download"),
        ("GET", f"/v1/exports/{job_id}/events"),
    ]


async def test_another_user_gets_the_same_404_as_for_a_missing_job(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    owner = await create_user(pool, ["exporter"])
    intruder = await create_user(pool, ["exporter"])
    tool = await create_tool(pool, owner)
    jobs = {
        status: await insert_job(pool, owner, tool, status)
        for status in ("pending", "in_progress", "failed", "completed")
    }
    before = await pool.fetch(
        "SELECT job_id, status::text, attempt, updated_at FROM export_jobs ORDER BY job_id"
    )
    headers = bearer(settings, intruder, ["exporter"])
    async with api_client(settings, with_relay=False) as client:
        for job_id in jobs.values():
            missing = uuid4()
            for (method, path), (_, missing_path) in zip(
                job_routes(job_id), job_routes(missing), strict=True
            ):
                theirs = await client.request(method, path, headers=headers)
                nothing = await client.request(method, missing_path, headers=headers)
                assert theirs.status_code == nothing.status_code == 404, (path, theirs.text)
                assert theirs.json()["error"]["code"] == nothing.json()["error"]["code"] == "job_not_found"
                assert theirs.json()["error"]["message"].replace(str(job_id), "ID") == nothing.json()[
                    "error"
                ]["message"].replace(str(missing), "ID")
                assert set(theirs.headers) - {"content-length"} == set(nothing.headers) - {"content-length"}
        listed = await client.get("/v1/exports", headers=headers)
        by_tool = await client.get("/v1/exports", params={"tool_id": str(tool)}, headers=headers)
    assert listed.json() == {"items": [], "next_cursor": None}
    assert by_tool.json() == {"items": [], "next_cursor": None}
    after = await pool.fetch(
        "SELECT job_id, status::text, attempt, updated_at FROM export_jobs ORDER BY job_id"
    )
    assert before == after  # nothing was cancelled or retried
    assert await pool.fetchval("SELECT count(*) FROM export_outbox") == 0


async def test_admins_may_act_on_anyones_job(settings: Settings, pool: asyncpg.Pool) -> None:
    owner = await create_user(pool, ["exporter"])
    admin = await create_user(pool, ["admin"])
    tool = await create_tool(pool, owner)
    failed = await insert_job(pool, owner, tool, "failed")
    done = await completed_job(pool, settings, owner, tool, "bundle.zip", CONTENT)
    headers = bearer(settings, admin, ["admin"])
    async with api_client(settings, with_relay=False) as client:
        assert (await client.get(f"/v1/exports/{failed}", headers=headers)).status_code == 200
        assert (await client.post(f"/v1/exports/{failed}/retry", headers=headers)).status_code == 202
        link = await client.get(f"/v1/exports/{done}/download", headers=headers)
        assert link.status_code == 307
        got = await client.get(link.headers["location"])
    assert got.status_code == 200 and got.content == CONTENT


async def test_endpoints_need_a_valid_token(settings: Settings, pool: asyncpg.Pool) -> None:
    job = uuid4()
    async with api_client(settings, with_relay=False) as client:
        for method, path in [("GET", "/v1/exports"), *job_routes(job)]:
            for headers in (
                {},
                {"Authorization": "Bearer nope"},
                bearer(settings, uuid4(), ["exporter"], ttl=-10),
            ):
                response = await client.request(method, path, headers=headers)
                assert response.status_code == 401, (method, path, headers)
                assert response.json()["error"]["code"] in {"missing_token", "invalid_token", "token_expired"}


async def test_a_signed_url_cannot_be_bent_to_another_job_user_or_expiry(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    owner = await create_user(pool, ["exporter"])
    other = await create_user(pool, ["exporter"])
    tool = await create_tool(pool, owner)
    mine = await completed_job(pool, settings, owner, tool, "a.zip", CONTENT)
    theirs_tool = await create_tool(pool, other)
    theirs = await completed_job(pool, settings, other, theirs_tool, "b.zip", b"secret of the other user")
    async with api_client(settings, with_relay=False) as client:
        link = await client.get(f"/v1/exports/{mine}/download", headers=bearer(settings, owner, ["exporter"]))
        url = urlsplit(link.headers["location"])
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        assert (await client.get(link.headers["location"])).status_code == 200

        async def fetch(path: str, **changes: str) -> httpx.Response:
            return await client.get(f"{path}?{urlencode({**query, **changes})}")

        tampered = [
            await fetch(url.path.replace(str(mine), str(theirs))),  # other job
            await fetch(url.path, user=str(other)),  # other user
            await fetch(url.path, expires=str(int(query["expires"]) + 3600)),  # longer life
            await fetch(url.path, expires=str(int(query["expires"]) - 1)),
            await fetch(url.path, sig="0" * 64),
            await fetch(url.path, sig=query["sig"][:-1] + ("0" if query["sig"][-1] != "0" else "1")),
        ]
    for response in tampered:
        assert response.status_code == 403, response.text
        assert response.json()["error"]["code"] == "invalid_signature"
        assert b"secret of the other user" not in response.content
