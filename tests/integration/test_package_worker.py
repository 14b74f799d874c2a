"""The package strategies under the real API, broker, worker and orchestrator: a job for
each tool type completes, reports its steps, and its download is the verified archive."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import asyncpg
import pytest

from service import seed_data
from service.config import Settings
from service.packaging.archive import verify_archive
from service.steps import StepContext
from service.strategies import forms
from tests.support.api import api_client, bearer
from tests.support.data import create_user
from tests.support.jobs import submit, wait_status
from tests.support.run_steps import context
from tests.support.worker import worker_running

pytestmark = pytest.mark.timeout(180)


@pytest.mark.parametrize(
    ("tool_type", "metadata", "steps"),
    [
        ("forms", seed_data.form_metadata(), 8),
        ("workflows", seed_data.workflow_metadata(), 7),
        ("themes", seed_data.theme_metadata(), 6),
    ],
)
async def test_a_package_job_completes_and_downloads_the_verified_archive(
    settings: Settings,
    pool: asyncpg.Pool,
    tmp_path: Path,
    tool_type: str,
    metadata: dict[str, object],
    steps: int,
) -> None:
    user = await create_user(pool, ["exporter"])
    records = {"forms": seed_data.form_submissions(300), "workflows": seed_data.workflow_executions(300)}
    async with pool.acquire() as conn:
        tool = await seed_data.insert_tool(
            conn,
            owner_id=user,
            tool_type=tool_type,
            name=f"Worker {tool_type}",
            metadata=metadata,  # type: ignore[arg-type]
            records=records.get(tool_type, ()),
            assets=seed_data.theme_assets(),
        )
    async with api_client(settings) as client, worker_running(settings):
        job_id = await submit(client, settings, user, tool)
        row = await wait_status(pool, job_id, timeout=120)
        assert row["status"] == "completed", (row["error_code"], row["error_message"])
        assert row["steps_completed"] == row["steps_total"] == steps
        download = await client.get(
            f"/v1/exports/{job_id}/download",
            headers=bearer(settings, user, ["exporter"]),
            follow_redirects=True,
        )
        assert download.status_code == 200
        assert hashlib.sha256(download.content).hexdigest() == row["package_sha256"].strip()
    archive = tmp_path / "package.tar.gz"
    archive.write_bytes(download.content)
    manifest = verify_archive(archive)
    assert manifest["strategy"] == f"{tool_type}-package"


async def test_cancelling_stops_the_submissions_copy_between_batches(
    pool: asyncpg.Pool, settings: Settings, tmp_path: Path
) -> None:
    async with pool.acquire() as conn:
        tool = await seed_data.insert_tool(
            conn, owner_id=None, tool_type="forms", name="F", metadata=seed_data.form_metadata(),
            records=seed_data.form_submissions(20_000),
        )  # fmt: skip
    strategy, run = await context(pool, settings, tool, tmp_path)
    ctx: StepContext = run.ctx
    for step in strategy.steps[:2]:
        await step.run(ctx)
    ctx.report = lambda fraction: ctx.cancelled.set()  # cancel once the first batch is written
    with pytest.raises(asyncio.CancelledError):
        await forms.copy_data(ctx)
    assert not (
        ctx.workdir / "pkg/data/submissions.csv"
    ).exists()  # only the .partial, never a whole-looking CSV
