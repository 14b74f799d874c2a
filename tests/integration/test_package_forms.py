"""Format `package` for forms, end to end: the archive, every generated file read by its
real reader, the SQL applied to PostgreSQL with the submissions loaded, and the generated
Node.js service built, migrated, loaded and answering HTTP."""

from __future__ import annotations

import csv
import functools
import json
import time
from pathlib import Path
from uuid import UUID

import asyncpg
import httpx
import pytest

from service import seed_data, tools
from service.config import Settings
from service.errors import PermanentError
from tests.support import package_checks, typescript
from tests.support.run_steps import Run, context, export, extract, run_steps

pytestmark = pytest.mark.timeout(600)
RECORDS = 60


async def forms_tool(pool: asyncpg.Pool, records: int = RECORDS, **overrides: object) -> UUID:
    fields = {
        "tool_type": "forms",
        "name": "Customer registration",
        "metadata": seed_data.form_metadata(),
        "records": seed_data.form_submissions(records),
        "assets": [("images/logo.png", "image/png", seed_data.png(2, 2))],
        **overrides,
    }
    async with pool.acquire() as conn:
        return await seed_data.insert_tool(conn, owner_id=None, **fields)  # type: ignore[arg-type]


@pytest.fixture
async def package(pool: asyncpg.Pool, settings: Settings, tmp_path: Path) -> tuple[Run, Path]:
    run = await export(pool, settings, await forms_tool(pool), tmp_path)
    return run, extract(run.archive, tmp_path / "out")


async def test_archive_holds_a_complete_valid_service(package: tuple[Run, Path]) -> None:
    run, root = package
    manifest = package_checks.check_manifest(run.archive, root)
    assert manifest["tool"]["type"] == "forms"
    assert manifest["strategy"] == "forms-package"
    assert manifest["created_at"] == run.ctx.tool.updated_at
    assert manifest["notes"] == []
    names = set(package_checks.files(root))
    for expected in (
        "Dockerfile", "docker-compose.yml", ".env.example", "package.json", "tsconfig.json", "README.md",
        "src/server.ts", "src/submissions.ts", "src/model.ts", "src/db.ts", "src/migrate.ts", "src/load.ts",
        "db/migrations/0001_init.up.sql", "db/migrations/0001_init.down.sql", "scripts/setup.sh",
        "data/form-schema.json", "data/submissions.csv", "data/assets/images/logo.png",
    ):  # fmt: skip
        assert expected in names, expected
    parsed = package_checks.parse_json_files(root)
    assert parsed["data/form-schema.json"] == seed_data.form_metadata()
    pkg = parsed["package.json"]
    assert pkg["scripts"]["migrate"] == "node dist/migrate.js"
    assert all(v[0].isdigit() for v in {**pkg["dependencies"], **pkg["devDependencies"]}.values())  # pinned
    compose = package_checks.parse_yaml(root / "docker-compose.yml")
    assert compose["services"]["db"]["image"].startswith("postgres:")
    assert compose["services"]["app"]["depends_on"]["db"]["condition"] == "service_healthy"
    assert package_checks.final_user(root / "Dockerfile") == "node"
    with (root / "data/submissions.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == RECORDS
    first = next(seed_data.form_submissions(1))
    assert rows[0]["full_name"] == first["full_name"] and json.loads(rows[0]["data"]) == first
    assert rows[0]["newsletter"] == ("true" if first["newsletter"] else "false")
    assert run.package.size == run.archive.stat().st_size


async def test_generated_sql_applies_and_the_submissions_load(
    package: tuple[Run, Path], servers: tuple[str, str]
) -> None:
    _, root = package
    async with package_checks.scratch_database(servers[0]) as url:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute((root / "db/migrations/0001_init.up.sql").read_text("utf-8"))
            with (root / "data/submissions.csv").open("rb") as fh:
                header = fh.readline().decode().strip().split(",")
                fh.seek(0)
                await conn.copy_to_table(
                    "form_submissions", source=fh, columns=header, format="csv", header=True
                )
            row = await conn.fetchrow("SELECT * FROM form_submissions ORDER BY submission_id LIMIT 1")
            first = next(seed_data.form_submissions(1))
            assert row["age"] == first["age"] and row["birthday"].isoformat() == first["birthday"]
            assert json.loads(row["interests"]) == first["interests"]
            assert await conn.fetchval("SELECT count(*) FROM form_submissions") == RECORDS
            definition = await conn.fetchval("SELECT definition FROM form_definition")
            assert json.loads(definition) == seed_data.form_metadata()
            await conn.execute((root / "db/migrations/0001_init.down.sql").read_text("utf-8"))
            assert await conn.fetchval("SELECT to_regclass('form_submissions')") is None
        finally:
            await conn.close()


async def test_generated_service_builds_migrates_loads_and_serves(
    package: tuple[Run, Path], servers: tuple[str, str]
) -> None:
    _, root = package
    typescript.build(root)
    async with package_checks.scratch_database(servers[0]) as url:
        env = {"DATABASE_URL": url}
        migrated = typescript.node(root, "dist/migrate.js", env)
        assert migrated.returncode == 0, migrated.stderr
        loaded = typescript.node(root, "dist/load.js", env)
        assert loaded.returncode == 0, loaded.stderr
        assert f"loaded {RECORDS} rows" in loaded.stdout
        again = typescript.node(root, "dist/load.js", env)
        assert "already loaded" in again.stdout
        with typescript.server(root, env) as base:
            async with httpx.AsyncClient(base_url=base, timeout=10) as client:
                form = (await client.get("/form")).json()
                assert form == seed_data.form_metadata()
                page = (await client.get("/submissions", params={"limit": 10})).json()
                assert len(page["items"]) == 10 and page["next_after"] == page["items"][-1]["submission_id"]
                bad = await client.post("/submissions", json={"email": "nope"})
                assert bad.status_code == 422
                assert {e["field"] for e in bad.json()["errors"]} >= {"full_name", "email", "country"}
                good = await client.post(
                    "/submissions",
                    json={
                        "full_name": "New",
                        "email": "n@example.com",
                        "country": "FR",
                        "interests": ["news"],
                    },
                )
                assert good.status_code == 201, good.text
                assert int(good.json()["submission_id"]) == RECORDS + 1  # identity moved past the loaded ids
                assert (await client.get("/assets/images/logo.png")).content == seed_data.png(2, 2)


async def test_same_tool_data_gives_a_byte_identical_archive(
    pool: asyncpg.Pool, settings: Settings, tmp_path: Path
) -> None:
    tool_id = await forms_tool(pool)
    first = await export(pool, settings, tool_id, tmp_path / "a")
    time.sleep(1.1)  # a clock-dependent mtime or gzip header would now differ
    second = await export(pool, settings, tool_id, tmp_path / "b")
    assert first.package.sha256 == second.package.sha256
    assert first.archive.read_bytes() == second.archive.read_bytes()


async def test_submissions_are_streamed_in_batches_with_progress(
    pool: asyncpg.Pool, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tools, "stream_records", functools.partial(tools.stream_records, batch_size=7))
    strategy, run = await context(pool, settings, await forms_tool(pool), tmp_path)
    await run_steps(strategy, run.ctx, until="data")
    fractions = run.fractions
    assert len(fractions) == -(-RECORDS // 7)  # one report per batch
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


async def test_each_step_leaves_its_outputs_and_undo_removes_them(
    pool: asyncpg.Pool, settings: Settings, tmp_path: Path
) -> None:
    strategy, run = await context(pool, settings, await forms_tool(pool), tmp_path)
    ctx = run.ctx
    for step in strategy.steps:
        await step.run(ctx)
        for output in step.outputs:
            assert (ctx.workdir / output).exists(), (step.name, output)
    assert await run.storage.exists(run.package.key)
    for step in reversed(strategy.steps):
        await step.undo(ctx)
    assert not await run.storage.exists(run.package.key)
    left = [p for p in (ctx.workdir / "pkg").rglob("*") if p.is_file() and p.name != "manifest.json"]
    assert left == []


@pytest.mark.parametrize(
    "metadata",
    [{}, {"fields": []}, {"fields": "email"}, {"fields": [{"type": "text"}]}, {"fields": [{"name": "  "}]}],
)
async def test_a_form_without_a_usable_schema_is_refused(
    pool: asyncpg.Pool, settings: Settings, tmp_path: Path, metadata: dict[str, object]
) -> None:
    strategy, run = await context(pool, settings, await forms_tool(pool, 1, metadata=metadata), tmp_path)
    with pytest.raises(PermanentError) as raised:
        await strategy.steps[0].run(run.ctx)
    assert raised.value.code == "invalid_tool_data"
    assert strategy.steps[0].retryable is False
