"""Migrations apply, report nothing to do the second time, and round-trip down/up."""

from __future__ import annotations

import asyncpg

from service import migrations
from service.config import Settings


async def _tables(conn: asyncpg.Connection) -> set[str]:
    rows = await conn.fetch(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'schema_migrations'"
    )
    return {r["tablename"] for r in rows}


async def _outbox_trigger(conn: asyncpg.Connection) -> str:
    definition: str = await conn.fetchval(
        "SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE tgname = 'export_outbox_inserted'"
    )
    return definition


async def test_up_twice_is_a_no_op_and_down_up_restores(settings: Settings) -> None:
    conn = await asyncpg.connect(settings.database_url)
    try:
        assert await migrations.up(conn) == []  # the template already applied everything
        before = await _tables(conn)
        assert {
            "users",
            "tool_registry",
            "tool_records",
            "tool_assets",
            "export_jobs",
            "export_job_steps",
            "export_job_events",
            "export_outbox",
        } <= before
        triggers = await _outbox_trigger(conn)
        assert "FOR EACH ROW" in triggers and "'requests'" in triggers
        reverted = await migrations.down(conn)
        assert reverted is not None and reverted.version == "0003"
        assert await conn.fetchval("SELECT to_regclass('idx_export_jobs_user_id')") is not None
        reverted = await migrations.down(conn)
        assert reverted is not None and reverted.version == "0002"
        assert "FOR EACH STATEMENT" in await _outbox_trigger(conn)
        reverted = await migrations.down(conn)
        assert reverted is not None and reverted.version == "0001"
        assert await _tables(conn) == set()
        applied = await migrations.up(conn)
        assert [m.version for m in applied] == ["0001", "0002", "0003"]
        assert await conn.fetchval("SELECT to_regclass('idx_export_jobs_user_id')") is None
        assert await _tables(conn) == before
        assert await _outbox_trigger(conn) == triggers
    finally:
        await conn.close()


async def test_status_constraints_are_enforced(pool: asyncpg.Pool) -> None:
    import pytest

    user = await pool.fetchval("INSERT INTO users (email) VALUES ('c@example.com') RETURNING user_id")
    tool = await pool.fetchval(
        "INSERT INTO tool_registry (tool_name, tool_type, owner_id) VALUES ('t', 'forms', $1) RETURNING tool_id",
        user,
    )
    with pytest.raises(asyncpg.InvalidTextRepresentationError):
        await pool.execute(
            "INSERT INTO export_jobs (tool_id, user_id, format, status) VALUES ($1, $2, 'bundle', 'bogus')",
            tool,
            user,
        )
    with pytest.raises(asyncpg.CheckViolationError):
        await pool.execute(
            "INSERT INTO export_jobs (tool_id, user_id, format, steps_completed, steps_total)"
            " VALUES ($1, $2, 'bundle', 5, 3)",
            tool,
            user,
        )
    with pytest.raises(asyncpg.CheckViolationError):
        await pool.execute(
            "INSERT INTO export_jobs (tool_id, user_id, format, progress_percentage)"
            " VALUES ($1, $2, 'bundle', 101)",
            tool,
            user,
        )
