"""Poison messages go to the dead-letter queue at once, with the reason in a header, and
never loop; when a job row exists it is `failed` with that code and announces it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from uuid import uuid4

import asyncpg

from service import jobs
from service.config import Settings
from service.dlq.letters import Filter, listing
from tests.support.jobs import scripted, scripted_tool, terminal_messages, wait_status
from tests.support.rabbit import publish_raw, queue_depth, request_body, topology, wait_depth
from tests.support.worker import worker_running


async def _dead_letters(settings: Settings, expected: int) -> dict[str, tuple[str, int | None, str]]:
    """{job id or message id: (reason, deliveries, detail)} once `expected` letters are in."""
    assert await wait_depth(settings.amqp_url, topology(settings).dead, expected) == expected
    _, letters = await listing(settings, Filter(), None)
    return {letter.job_id: (letter.reason, letter.deliveries, letter.detail) for letter in letters}


async def test_malformed_messages_are_dead_lettered_once_with_their_reason(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    settings = scripted(settings)
    user, tool = await scripted_tool(pool, tmp_path / "journal")
    exchange = topology(settings).exchange
    ids = {reason: uuid4() for reason in ("unknown_schema", "invalid_message", "unknown_format")}
    bodies = {
        "invalid_json": b"{not json",
        "unknown_schema": request_body(ids["unknown_schema"], tool, user, schema="export.requested.v9"),
        "invalid_message": request_body(ids["invalid_message"], tool, user, tool_id="not-a-uuid"),
        "unknown_format": request_body(ids["unknown_format"], tool, user, format="docx"),
    }
    async with worker_running(settings):
        for reason, body in bodies.items():
            await publish_raw(settings.amqp_url, exchange, body, message_id=f"msg-{reason}")
        letters = await _dead_letters(settings, len(bodies))
        await asyncio.sleep(1)  # a looping message would be delivered again meanwhile
        assert await queue_depth(settings.amqp_url, topology(settings).dead) == len(bodies)

    assert letters["msg-invalid_json"][:2] == ("invalid_json", 1)
    for reason in ("unknown_schema", "invalid_message", "unknown_format"):
        assert letters[str(ids[reason])][:2] == (reason, 1), letters
    assert "tool_id" in letters[str(ids["invalid_message"])][2]
    assert await queue_depth(settings.amqp_url, topology(settings).requests) == 0
    assert await pool.fetchval("SELECT count(*) FROM export_jobs") == 0


async def test_unknown_tool_or_user_is_dead_lettered_without_creating_a_job(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    settings = scripted(settings)
    user, tool = await scripted_tool(pool, tmp_path / "journal")
    no_tool, no_user = uuid4(), uuid4()
    async with worker_running(settings):
        exchange = topology(settings).exchange
        await publish_raw(settings.amqp_url, exchange, request_body(no_tool, uuid4(), user))
        await publish_raw(settings.amqp_url, exchange, request_body(no_user, tool, uuid4()))
        letters = await _dead_letters(settings, 2)

    assert letters[str(no_tool)][0] == "unknown_tool"
    assert letters[str(no_user)][0] == "unknown_user"
    assert await pool.fetchval("SELECT count(*) FROM export_jobs") == 0


async def test_a_poison_message_for_an_existing_job_fails_the_job_with_its_code(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    settings = scripted(settings)
    user, tool = await scripted_tool(pool, tmp_path / "journal")
    cases = {"unsupported_format": {"format": "bundle"}, "invalid_options": {"options": {"colour": "red"}}}
    job_ids = {}
    for code, changes in cases.items():
        job_id = uuid4()
        job_ids[code] = job_id
        fmt = str(changes.get("format", "package"))
        await pool.execute(
            jobs.INSERT_JOB, job_id, tool, user, fmt, changes.get("options", {}), 4, None, None, 1
        )
    async with worker_running(settings):
        for code, changes in cases.items():
            body = request_body(job_ids[code], tool, user, **changes)
            await publish_raw(settings.amqp_url, topology(settings).exchange, body)
        letters = await _dead_letters(settings, 2)

    for code, job_id in job_ids.items():
        row = await wait_status(pool, job_id, timeout=5)
        assert (row["status"], row["error_code"]) == ("failed", code)
        assert letters[str(job_id)][0] == code
        assert await terminal_messages(pool, job_id) == ["export.failed"]
        event = await pool.fetchval(
            "SELECT body FROM export_outbox WHERE exchange = 'events' AND message_id LIKE $1",
            f"{job_id}%",
        )
        body = event if isinstance(event, dict) else json.loads(event)
        assert (body["status"], body["error_code"]) == ("failed", code)
    assert not (tmp_path / "journal").exists()  # no step ever ran
