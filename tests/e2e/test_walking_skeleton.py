"""End to end on the real commands: submit over HTTP, a worker process runs it, download, verify."""

from __future__ import annotations

import io
import json
import time
import zipfile
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from service.api.auth import issue_token
from service.config import Settings
from service.packaging.archive import verify_archive
from tests.conftest import TEST_SECRET
from tests.support.data import create_tool, create_user
from tests.support.processes import running

RECORDS = [{"email": f"user{i}@example.com", "score": i, "note": "naïve ☃ café"} for i in range(250)]
ASSETS = [("images/logo.png", "image/png", b"\x89PNG\r\n\x1a\n" + bytes(range(256)))]


def wait_for_status(
    client: httpx.Client, url: str, statuses: set[str], timeout: float = 60
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(url).json()
        if not seen or seen[-1] != job["status"]:
            seen.append(job["status"])
        if job["status"] in statuses:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job never reached {statuses}; statuses seen: {seen}")


async def test_submit_run_download_verify(settings: Settings, pool: asyncpg.Pool, tmp_path: Path) -> None:
    user = await create_user(pool, ["exporter"])
    tool = await create_tool(pool, user, "forms", records=RECORDS, assets=ASSETS)
    token = issue_token(TEST_SECRET, user, ["exporter"])

    with running(settings, tmp_path) as (api, _workers):
        assert api is not None
        client = httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {token}"}, timeout=10)
        created = client.post("/v1/exports", json={"tool_id": str(tool), "format": "bundle"})
        assert created.status_code == 202, created.text
        job = created.json()
        assert created.headers["Location"] == f"/v1/exports/{job['job_id']}"
        assert job["status"] == "pending" and job["steps_total"] == 5

        done = wait_for_status(client, created.headers["Location"], {"completed", "failed", "rolled_back"})
        assert done["status"] == "completed", done
        assert done["progress_percentage"] == 100 and done["steps_completed"] == 5

        download = client.get(done["download_url"])
        assert download.status_code == 200
        assert len(download.content) == done["package_size_bytes"]
        archive = tmp_path / "bundle.zip"
        archive.write_bytes(download.content)

    manifest = verify_archive(archive)
    assert {f["path"] for f in manifest["files"]} == {
        "definition.json",
        "records.jsonl",
        "media/images/logo.png",
    }
    with zipfile.ZipFile(io.BytesIO(archive.read_bytes())) as zf:
        lines = zf.read("records.jsonl").decode().splitlines()
        assert [json.loads(line)["data"] for line in lines] == RECORDS
        assert zf.read("media/images/logo.png") == ASSETS[0][2]
    status = await pool.fetchval("SELECT status::text FROM export_jobs WHERE job_id = $1", done["job_id"])
    assert status == "completed"
