"""Plain-SQL migrations: `NNNN_name.up.sql` / `.down.sql`, applied in order, tracked in a table."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

__all__ = ["Migration", "applied", "discover", "down", "status", "up"]

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
FILE_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.up\.sql$")
# Serialises concurrent `migrate` runs (several containers starting at once).
LOCK_KEY = 7_355_608_001

CREATE_TRACKING = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     text PRIMARY KEY,
    name        text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""
APPLIED = "SELECT version FROM schema_migrations ORDER BY version"
RECORD = "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)"
FORGET = "DELETE FROM schema_migrations WHERE version = $1"


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    up_path: Path
    down_path: Path


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    found = []
    for path in sorted(directory.glob("*.up.sql")):
        match = FILE_RE.match(path.name)
        if not match:
            raise ValueError(f"migration file name not NNNN_name.up.sql: {path.name}")
        down_path = path.with_name(path.name.replace(".up.sql", ".down.sql"))
        found.append(Migration(match[1], match[2], path, down_path))
    return found


async def applied(conn: asyncpg.Connection) -> list[str]:
    await conn.execute(CREATE_TRACKING)
    return [r["version"] for r in await conn.fetch(APPLIED)]


async def up(conn: asyncpg.Connection, directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Apply every pending migration, each in its own transaction; returns those applied."""
    done: list[Migration] = []
    await conn.execute("SELECT pg_advisory_lock($1)", LOCK_KEY)
    try:
        have = set(await applied(conn))
        for migration in discover(directory):
            if migration.version in have:
                continue
            async with conn.transaction():
                await conn.execute(migration.up_path.read_text("utf-8"))
                await conn.execute(RECORD, migration.version, migration.name)
            done.append(migration)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)
    return done


async def down(conn: asyncpg.Connection, directory: Path = MIGRATIONS_DIR) -> Migration | None:
    """Revert the most recently applied migration; returns it, or None when none is applied."""
    await conn.execute("SELECT pg_advisory_lock($1)", LOCK_KEY)
    try:
        have = await applied(conn)
        if not have:
            return None
        by_version = {m.version: m for m in discover(directory)}
        migration = by_version[have[-1]]
        async with conn.transaction():
            await conn.execute(migration.down_path.read_text("utf-8"))
            await conn.execute(FORGET, migration.version)
        return migration
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)


async def status(conn: asyncpg.Connection, directory: Path = MIGRATIONS_DIR) -> list[tuple[Migration, bool]]:
    have = set(await applied(conn))
    return [(m, m.version in have) for m in discover(directory)]
