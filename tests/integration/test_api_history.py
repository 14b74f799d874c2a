"""GET /v1/exports: the caller's jobs, newest first, filtered, in keyset pages that stay stable."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
import httpx
import pytest

from service import jobs
from service.config import Settings
from tests.support.api import api_client, bearer
from tests.support.data import create_tool, create_user
from tests.support.exports import insert_job

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


async def all_pages(client: httpx.AsyncClient, headers: dict[str, str], **params: Any) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = await client.get("/v1/exports", params=query, headers=headers)
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append([item["job_id"] for item in body["items"]])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 100


async def test_pages_cover_every_job_once_newest_first(settings: Settings, pool: asyncpg.Pool) -> None:
    user = await create_user(pool, ["exporter"])
    tool = await create_tool(pool, user)
    ids = [await insert_job(pool, user, tool, created_at=T0 + timedelta(minutes=i)) for i in range(25)]
    async with api_client(settings, with_relay=False) as client:
        pages = await all_pages(client, bearer(settings, user, ["exporter"]), limit=10)
    assert [len(p) for p in pages] == [10, 10, 5]
    assert [j for p in pages for j in p] == [str(i) for i in reversed(ids)]


async def test_new_jobs_do_not_shift_later_pages(settings: Settings, pool: asyncpg.Pool) -> None:
    user = await create_user(pool, ["exporter"])
    tool = await create_tool(pool, user)
    old = [await insert_job(pool, user, tool, created_at=T0 + timedelta(seconds=i)) for i in range(12)]
    headers = bearer(settings, user, ["exporter"])
    async with api_client(settings, with_relay=False) as client:
        first = (await client.get("/v1/exports", params={"limit": 5}, headers=headers)).json()
        for _ in range(7):  # arrive between page 1 and page 2, newer than everything
            await insert_job(pool, user, tool)
        seen = [item["job_id"] for item in first["items"]]
        cursor = first["next_cursor"]
        while cursor:
            page = (
                await client.get("/v1/exports", params={"limit": 5, "cursor": cursor}, headers=headers)
            ).json()
            seen += [item["job_id"] for item in page["items"]]
            cursor = page["next_cursor"]
    assert seen == [str(i) for i in reversed(old)]


async def test_ties_on_created_at_are_broken_by_job_id(settings: Settings, pool: asyncpg.Pool) -> None:
    user = await create_user(pool, ["exporter"])
    tool = await create_tool(pool, user)
    ids = [await insert_job(pool, user, tool, created_at=T0) for _ in range(7)]
    async with api_client(settings, with_relay=False) as client:
        pages = await all_pages(client, bearer(settings, user, ["exporter"]), limit=2)
    flat = [j for p in pages for j in p]
    assert flat == sorted((str(i) for i in ids), key=UUID, reverse=True)


async def test_filters(settings: Settings, pool: asyncpg.Pool) -> None:
    user = await create_user(pool, ["exporter"])
    tool_a = await create_tool(pool, user)
    tool_b = await create_tool(pool, user)
    made: dict[str, UUID] = {}
    for i, (status, tool) in enumerate(
        [("pending", tool_a), ("failed", tool_a), ("completed", tool_b), ("cancelled", tool_b)]
    ):
        made[status] = await insert_job(pool, user, tool, status, created_at=T0 + timedelta(hours=i))
    headers = bearer(settings, user, ["exporter"])

    async def ids(**params: Any) -> set[str]:
        response = await client.get("/v1/exports", params=params, headers=headers)
        assert response.status_code == 200, response.text
        return {item["job_id"] for item in response.json()["items"]}

    async with api_client(settings, with_relay=False) as client:
        assert await ids(status="failed") == {str(made["failed"])}
        assert await ids(status=["failed", "cancelled"]) == {str(made["failed"]), str(made["cancelled"])}
        assert await ids(tool_id=str(tool_b)) == {str(made["completed"]), str(made["cancelled"])}
        after = (T0 + timedelta(hours=1)).isoformat()
        before = (T0 + timedelta(hours=3)).isoformat()
        assert await ids(created_after=after, created_before=before) == {
            str(made["failed"]),
            str(made["completed"]),
        }
        assert await ids(status="completed", tool_id=str(tool_a)) == set()
        # A naive time is read as UTC.
        assert await ids(created_before=(T0 + timedelta(minutes=1)).replace(tzinfo=None).isoformat()) == {
            str(made["pending"])
        }


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"limit": 0}, "invalid_request"),
        ({"limit": 101}, "invalid_request"),
        ({"status": "running"}, "invalid_request"),
        ({"cursor": "not-a-cursor"}, "invalid_cursor"),
        ({"created_after": "yesterday"}, "invalid_request"),
        ({"tool_id": "12"}, "invalid_request"),
    ],
)
async def test_bad_parameters_get_422(
    settings: Settings, pool: asyncpg.Pool, params: dict[str, Any], code: str
) -> None:
    user = await create_user(pool, ["exporter"])
    async with api_client(settings, with_relay=False) as client:
        response = await client.get(
            "/v1/exports", params=params, headers=bearer(settings, user, ["exporter"])
        )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == code


async def test_default_limit_is_20_and_max_100(settings: Settings, pool: asyncpg.Pool) -> None:
    user = await create_user(pool, ["exporter"])
    tool = await create_tool(pool, user)
    await pool.execute(
        "INSERT INTO export_jobs (tool_id, user_id, format, created_at)"
        " SELECT $1, $2, 'bundle', $3::timestamptz + make_interval(secs => g) FROM generate_series(1, 120) g",
        tool,
        user,
        T0,
    )
    headers = bearer(settings, user, ["exporter"])
    async with api_client(settings, with_relay=False) as client:
        default = (await client.get("/v1/exports", headers=headers)).json()
        biggest = (await client.get("/v1/exports", params={"limit": 100}, headers=headers)).json()
    assert len(default["items"]) == 20 and default["next_cursor"]
    assert len(biggest["items"]) == 100 and biggest["next_cursor"]


async def test_admins_list_their_own_by_default_and_everyone_with_all(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    user = await create_user(pool, ["exporter"])
    admin = await create_user(pool, ["admin"])
    tool = await create_tool(pool, user)
    theirs = await insert_job(pool, user, tool)
    mine = await insert_job(pool, admin, tool)
    async with api_client(settings, with_relay=False) as client:
        own = await client.get("/v1/exports", headers=bearer(settings, admin, ["admin"]))
        everyone = await client.get(
            "/v1/exports", params={"all": "true"}, headers=bearer(settings, admin, ["admin"])
        )
        refused = await client.get(
            "/v1/exports", params={"all": "true"}, headers=bearer(settings, user, ["exporter"])
        )
    assert [i["job_id"] for i in own.json()["items"]] == [str(mine)]
    assert {i["job_id"] for i in everyone.json()["items"]} == {str(mine), str(theirs)}
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"


async def test_a_page_is_an_index_range_scan(pool: asyncpg.Pool) -> None:
    users = [await create_user(pool, ["exporter"]) for _ in range(50)]
    tool = await create_tool(pool, users[0])
    await pool.execute(
        "INSERT INTO export_jobs (tool_id, user_id, format, created_at)"
        " SELECT $1, ($2::uuid[])[1 + g % 50], 'bundle', now() - make_interval(secs => g)"
        " FROM generate_series(1, 20000) g",
        tool,
        users,
    )
    await pool.execute("ANALYZE export_jobs")
    where = jobs.JobFilter(user_id=users[3], statuses=("pending",))
    sql, args = jobs.list_query(where, (datetime.now(UTC), UUID(int=0)), 21)
    plan = "\n".join(r[0] for r in await pool.fetch("EXPLAIN " + sql, *args))
    assert "idx_export_jobs_user_created" in plan, plan
    assert "Sort" not in plan, plan
