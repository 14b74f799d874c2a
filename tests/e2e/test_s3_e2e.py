"""API and two workers on S3 storage, each with its own local directory: a batch of jobs
completes and every download (a presigned URL) verifies against its manifest."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from service.config import Settings
from service.packaging.archive import verify_archive
from tests.support import s3server
from tests.support.api import bearer
from tests.support.data import create_tool, create_user
from tests.support.jobs import wait_status
from tests.support.processes import Proc, free_port, settings_env, start


@pytest.fixture(scope="module")
def s3() -> Iterator[s3server.S3Server]:
    with s3server.running() as server:
        yield server


async def test_two_workers_and_the_api_share_nothing_but_s3(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path, s3: s3server.S3Server
) -> None:
    bucket = await s3.create_bucket()
    storage_env = s3.env(bucket)
    user = await create_user(pool, ["exporter"])
    tools = [
        await create_tool(
            pool,
            user,
            kind,
            records=[{"n": i, "kind": kind} for i in range(50)],
            assets=[("img/a.png", "image/png", b"png" * 100)],
        )
        for kind in ("forms", "workflows", "themes")
    ]
    procs: list[Proc] = []

    def launch(command: str, name: str) -> Proc:
        port = free_port()
        ports = {"http_port": port} if command == "api" else {"metrics_port": port}
        env = {**settings_env(settings, storage_dir=tmp_path / name, **ports), **storage_env}
        proc = start([command], env, f"http://127.0.0.1:{port}/readyz", tmp_path / f"{name}.log")
        procs.append(proc)
        return proc

    try:
        api = launch("api", "api")
        launch("worker", "worker-a")
        launch("worker", "worker-b")
        async with httpx.AsyncClient(
            base_url=api.url, headers=bearer(settings, user, ["exporter"])
        ) as client:
            created = [
                (await client.post("/v1/exports", json={"tool_id": str(tool), "format": "bundle"})).json()
                for tool in tools * 4
            ]
            rows = await asyncio.gather(*(wait_status(pool, job["job_id"], timeout=60) for job in created))
            assert {row["status"] for row in rows} == {"completed"}
            workers = {
                r["worker"]
                for r in await pool.fetch(
                    "SELECT detail->>'worker' AS worker FROM export_job_events WHERE kind = 'started'"
                )
            }
            assert len(workers) == 2, "both workers should have taken jobs"
            for job in created:
                redirect = await client.get(f"/v1/exports/{job['job_id']}/download")
                assert redirect.status_code == 307
                location = redirect.headers["Location"]
                assert location.startswith(s3.url), "S3 storage hands out presigned URLs"
                package = httpx.get(location, timeout=10)
                assert package.status_code == 200
                path = tmp_path / "download.zip"
                path.write_bytes(package.content)
                manifest = verify_archive(path)
                assert "records.jsonl" in {f["path"] for f in manifest["files"]}
    finally:
        for proc in procs:
            proc.stop()
    # Nothing was left in any process's local package directory: the packages live in S3.
    assert not list(tmp_path.glob("*/packages/**/*.zip"))
