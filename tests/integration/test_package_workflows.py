"""Format `package` for workflows, end to end: archive, JSON Schemas that validate the data
they describe, SQL applied with the history loaded, and the engine service running."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from uuid import UUID

import asyncpg
import httpx
import jsonschema
import pytest

from service import seed_data
from service.config import Settings
from service.errors import PermanentError
from tests.support import package_checks, typescript
from tests.support.run_steps import Run, context, export, extract

pytestmark = pytest.mark.timeout(600)
RECORDS = 40


async def workflows_tool(pool: asyncpg.Pool, records: int = RECORDS, **overrides: object) -> UUID:
    fields = {
        "tool_type": "workflows",
        "name": "Order approval",
        "metadata": seed_data.workflow_metadata(),
        "records": seed_data.workflow_executions(records),
        **overrides,
    }
    async with pool.acquire() as conn:
        return await seed_data.insert_tool(conn, owner_id=None, **fields)  # type: ignore[arg-type]


@pytest.fixture
async def package(pool: asyncpg.Pool, settings: Settings, tmp_path: Path) -> tuple[Run, Path]:
    run = await export(pool, settings, await workflows_tool(pool), tmp_path)
    return run, extract(run.archive, tmp_path / "out")


async def test_archive_holds_the_definition_history_schemas_and_docs(package: tuple[Run, Path]) -> None:
    run, root = package
    manifest = package_checks.check_manifest(run.archive, root)
    assert manifest["strategy"] == "workflows-package" and manifest["notes"] == []
    parsed = package_checks.parse_json_files(root)
    workflow = parsed["data/workflow.json"]
    assert workflow == seed_data.workflow_metadata()  # the demo is already in the engine's shape
    schema = parsed["schemas/workflow.schema.json"]
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(workflow, schema)
    broken = {**workflow, "initial_state": "nowhere"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)
    execution = parsed["schemas/execution.schema.json"]
    jsonschema.Draft202012Validator.check_schema(execution)
    for record in seed_data.workflow_executions(RECORDS):
        jsonschema.validate(record, execution)
    with (root / "data/executions.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == RECORDS
    first = next(seed_data.workflow_executions(1))
    assert (
        rows[0]["external_id"] == first["execution_id"] and json.loads(rows[0]["history"]) == first["history"]
    )
    readme = (root / "README.md").read_text("utf-8")
    for state in workflow["states"]:
        assert f"| {state['id']} | {state['label']} |" in readme
    assert "| review | approve | approved | Approve |" in readme
    assert package_checks.final_user(root / "Dockerfile") == "node"
    assert package_checks.parse_yaml(root / "docker-compose.yml")["services"]["db"]["healthcheck"]


async def test_generated_sql_applies_and_the_history_loads(
    package: tuple[Run, Path], servers: tuple[str, str]
) -> None:
    _, root = package
    async with package_checks.scratch_database(servers[0]) as url:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute((root / "db/migrations/0001_init.up.sql").read_text("utf-8"))
            with (root / "data/executions.csv").open("rb") as fh:
                header = fh.readline().decode().strip().split(",")
                fh.seek(0)
                await conn.copy_to_table(
                    "workflow_executions", source=fh, columns=header, format="csv", header=True
                )
            assert await conn.fetchval("SELECT count(*) FROM workflow_executions") == RECORDS
            done = await conn.fetchval("SELECT count(*) FROM workflow_executions WHERE status = 'completed'")
            expected = sum(e["status"] == "completed" for e in seed_data.workflow_executions(RECORDS))
            assert done == expected
            await conn.execute((root / "db/migrations/0001_init.down.sql").read_text("utf-8"))
            assert await conn.fetchval("SELECT to_regclass('workflow_executions')") is None
        finally:
            await conn.close()


async def test_generated_engine_builds_migrates_loads_and_runs_the_workflow(
    package: tuple[Run, Path], servers: tuple[str, str]
) -> None:
    _, root = package
    typescript.build(root)
    async with package_checks.scratch_database(servers[0]) as url:
        env = {"DATABASE_URL": url}
        for script in ("dist/migrate.js", "dist/load.js"):
            result = typescript.node(root, script, env)
            assert result.returncode == 0, result.stderr
        with typescript.server(root, env) as base:
            async with httpx.AsyncClient(base_url=base, timeout=10) as client:
                assert (await client.get("/workflow")).json() == seed_data.workflow_metadata()
                page = (await client.get("/executions", params={"limit": 100})).json()
                assert len(page["items"]) == RECORDS and page["next_after"] is None
                started = (await client.post("/executions", json={"input": {"order_id": 1}})).json()
                assert started["current_state"] == "submitted" and started["status"] == "running"
                assert int(started["execution_id"]) == RECORDS + 1
                path = f"/executions/{started['execution_id']}/events"
                refused = await client.post(path, json={"event": "ship"})
                assert refused.status_code == 409 and refused.json()["allowed"] == ["assign"]
                for event in ("assign", "approve", "ship"):
                    moved = await client.post(path, json={"event": event})
                    assert moved.status_code == 200, moved.text
                final = moved.json()
                assert final["current_state"] == "shipped" and final["status"] == "completed"
                assert [h["state"] for h in final["history"]] == [
                    "submitted",
                    "review",
                    "approved",
                    "shipped",
                ]


async def test_same_tool_data_gives_a_byte_identical_archive(
    pool: asyncpg.Pool, settings: Settings, tmp_path: Path
) -> None:
    tool_id = await workflows_tool(pool)
    first = await export(pool, settings, tool_id, tmp_path / "a")
    time.sleep(1.1)
    second = await export(pool, settings, tool_id, tmp_path / "b")
    assert first.archive.read_bytes() == second.archive.read_bytes()


async def test_each_step_leaves_its_outputs_and_undo_removes_them(
    pool: asyncpg.Pool, settings: Settings, tmp_path: Path
) -> None:
    strategy, run = await context(pool, settings, await workflows_tool(pool), tmp_path)
    assert len(strategy.steps) == 7
    for step in strategy.steps:
        await step.run(run.ctx)
        assert all((run.ctx.workdir / o).exists() for o in step.outputs), step.name
    for step in reversed(strategy.steps):
        await step.undo(run.ctx)
    assert not await run.storage.exists(run.package.key)
    assert [
        p for p in (run.ctx.workdir / "pkg").rglob("*") if p.is_file() and p.name != "manifest.json"
    ] == []


@pytest.mark.parametrize(
    "metadata",
    [
        {},
        {"states": []},
        {"states": [{"id": "a"}, {"id": "a"}]},
        {"states": [{"id": "a"}], "initial_state": "b"},
        {"states": [{"id": "a"}], "transitions": [{"from": "a", "to": "zzz", "event": "go"}]},
        {"states": [{"id": "a"}], "transitions": [{"from": "a", "to": "a"}]},
    ],
)
async def test_a_broken_definition_is_refused(
    pool: asyncpg.Pool, settings: Settings, tmp_path: Path, metadata: dict[str, object]
) -> None:
    strategy, run = await context(pool, settings, await workflows_tool(pool, 0, metadata=metadata), tmp_path)
    with pytest.raises(PermanentError) as raised:
        await strategy.steps[0].run(run.ctx)
    assert raised.value.code == "invalid_tool_data"
