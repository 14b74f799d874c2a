"""The operator commands as a user runs them: exit codes and what they print."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import asyncpg
import jwt

from service.config import Settings
from service.migrations import MIGRATIONS_DIR
from tests.support import infra
from tests.support.processes import REPO, settings_env


def exporter(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_migrate_creates_the_database_and_up_twice_is_a_no_op(
    settings: Settings, servers: tuple[str, str]
) -> None:
    admin_url, _ = servers
    name = infra.unique_name("cli")
    env = settings_env(settings, database_url=infra.with_database(admin_url, name))
    try:
        first = exporter(env, "migrate", "up")
        assert first.returncode == 0, first.stderr
        assert "created the database" in first.stdout and "applied 0001_initial" in first.stdout
        second = exporter(env, "migrate", "up")
        assert second.returncode == 0
        assert "nothing to apply" in second.stdout
        names = [path.name.removesuffix(".up.sql") for path in sorted(MIGRATIONS_DIR.glob("*.up.sql"))]
        assert names[0] == "0001_initial" and len(names) >= 3
        status = exporter(env, "migrate", "status")
        assert status.stdout.split() == [word for name in names for word in ("applied", name)]
        down = exporter(env, "migrate", "down")  # one step: the newest
        assert f"reverted {names[-1]}" in down.stdout
        assert exporter(env, "migrate", "status").stdout.split()[-2:] == ["pending", names[-1]]
        assert f"applied {names[-1]}" in exporter(env, "migrate", "up").stdout
    finally:
        await infra.drop_database(admin_url, name)


def test_an_invalid_setting_stops_start_up_with_one_line_naming_it(settings: Settings) -> None:
    for variable, value in [
        ("http_port", "eighty"),
        ("worker_concurrency", "0"),
        ("database_url", "mysql://nope"),
        ("storage_url", "ftp://x"),
    ]:
        result = exporter(settings_env(settings, **{variable: value}), "api")
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert f"EXPORTER_{variable.upper()}" in lines[0]


def test_api_refuses_to_start_without_a_secret(settings: Settings) -> None:
    result = exporter(settings_env(settings, jwt_secret=""), "api")
    assert result.returncode == 2
    assert "EXPORTER_JWT_SECRET" in result.stderr


async def test_seed_is_idempotent_and_token_prints_a_jwt(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    env = settings_env(settings)
    assert exporter(env, "seed", "--records", "20").returncode == 0
    counts = await pool.fetchrow(
        "SELECT (SELECT count(*) FROM users) AS users, (SELECT count(*) FROM tool_registry) AS tools,"
        " (SELECT count(*) FROM tool_records) AS records, (SELECT count(*) FROM tool_assets) AS assets"
    )
    assert exporter(env, "seed", "--records", "20").returncode == 0
    again = await pool.fetchrow(
        "SELECT (SELECT count(*) FROM users) AS users, (SELECT count(*) FROM tool_registry) AS tools,"
        " (SELECT count(*) FROM tool_records) AS records, (SELECT count(*) FROM tool_assets) AS assets"
    )
    assert dict(counts) == dict(again)
    assert counts["users"] == 3 and counts["records"] > 0 and counts["assets"] > 0
    types = {r["tool_type"] for r in await pool.fetch("SELECT tool_type FROM tool_registry")}
    assert types == {"forms", "workflows", "themes"}
    roles = {r["email"]: r["roles"] for r in await pool.fetch("SELECT email, roles FROM users")}
    assert roles == {
        "exporter@example.com": ["exporter"],
        "admin@example.com": ["admin"],
        "viewer@example.com": [],
    }

    token = exporter(env, "token", "admin@example.com")
    assert token.returncode == 0
    claims = jwt.decode(token.stdout.strip(), settings.jwt_secret, algorithms=["HS256"])
    assert claims["roles"] == ["admin"]
    missing = exporter(env, "token", "nobody@example.com")
    assert missing.returncode == 2 and "no user" in missing.stderr
