"""The `exporter` client commands against a real API and worker: submit --wait, watch, download
--extract, batch, and the exit code of each kind of failure."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any
from uuid import uuid4

import asyncpg
import pytest

from service.api.auth import issue_token
from service.config import Settings
from tests.support.data import create_tool, create_user
from tests.support.exports import insert_job
from tests.support.processes import REPO, free_port, running, settings_env

RECORDS = [{"email": f"user{i}@example.com", "n": i} for i in range(50)]
ASSETS = [("images/logo.png", "image/png", b"\x89PNG\r\n\x1a\n" + bytes(range(256)))]


def exporter(
    settings: Settings, api_url: str, token: str, *args: str, cwd: Path, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    env = settings_env(settings)
    env.update({"EXPORTER_API_URL": api_url, "EXPORTER_TOKEN": token, "COLUMNS": "160"})
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
async def owner(pool: asyncpg.Pool, settings: Settings) -> dict[str, Any]:
    user = await create_user(pool, ["exporter"])
    tool = await create_tool(pool, user, "forms", records=RECORDS, assets=ASSETS)
    return {"user": user, "tool": tool, "token": issue_token(settings.jwt_secret, user, ["exporter"])}


async def test_submit_wait_watch_download_extract(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path, owner: dict[str, Any]
) -> None:
    with running(settings, tmp_path) as (api, _):
        assert api is not None

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            return exporter(settings, api.url, owner["token"], *args, cwd=tmp_path)

        submitted = run("submit", str(owner["tool"]), "--format", "bundle", "--wait")
        assert submitted.returncode == 0, submitted.stderr
        job_id = submitted.stdout.strip()
        assert len(job_id) == 36
        assert "completed" in submitted.stderr and "100%" in submitted.stderr

        watched = run("watch", job_id, "--events")
        assert watched.returncode == 0, watched.stderr
        assert "completed" in watched.stderr

        out = tmp_path / "downloads"
        out.mkdir()
        downloaded = run("download", job_id, "-o", str(out), "--extract")
        assert downloaded.returncode == 0, downloaded.stderr
        path = Path(downloaded.stdout.strip().splitlines()[-1])
        assert path.parent == out and path.suffix == ".zip"
        assert "3 files match manifest.json" in downloaded.stderr
        extracted = path.with_name(path.name.split(".")[0])
        assert (extracted / "media" / "images" / "logo.png").read_bytes() == ASSETS[0][2]
        assert len((extracted / "records.jsonl").read_text().splitlines()) == len(RECORDS)
        assert not list(out.glob(".*.part"))

        named = run("download", job_id, "-o", str(tmp_path / "mine.zip"))
        assert named.returncode == 0 and (tmp_path / "mine.zip").read_bytes() == path.read_bytes()


async def test_failures_have_distinct_exit_codes(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path, owner: dict[str, Any]
) -> None:
    stranger = await create_user(pool, ["exporter"])
    running_job = await insert_job(pool, owner["user"], owner["tool"], "in_progress")
    finished = await insert_job(pool, owner["user"], owner["tool"], "completed")
    with running(settings, tmp_path, workers=0) as (api, _):
        assert api is not None

        def run(
            *args: str, token: str = owner["token"], url: str = api.url
        ) -> subprocess.CompletedProcess[str]:
            return exporter(settings, url, token, *args, "--retries", "1", "--backoff", "0", cwd=tmp_path)

        cases = {
            "unknown tool": (run("submit", str(uuid4()), "--format", "bundle"), 5, "unknown_tool"),
            "bad token": (run("watch", str(running_job), token="nope"), 3, "invalid_token"),
            "someone else's job": (
                run(
                    "cancel", str(running_job), token=issue_token(settings.jwt_secret, stranger, ["exporter"])
                ),
                5,
                "job_not_found",
            ),
            "not finished": (run("download", str(running_job)), 6, "not_completed"),
            "already finished": (run("cancel", str(finished)), 6, "job_finished"),
            "not retryable": (run("retry", str(running_job)), 6, "not_retryable"),
            "invalid option": (
                run("submit", str(owner["tool"]), "-f", "bundle", "-O", "x=1"),
                2,
                "invalid_options",
            ),
            "unreachable": (
                run("watch", str(running_job), url=f"http://127.0.0.1:{free_port()}"),
                10,
                "network",
            ),
            "timeout": (run("watch", str(running_job), "--timeout", "1"), 12, "timeout"),
        }
        for name, (result, code, text) in cases.items():
            assert result.returncode == code, (name, result.returncode, result.stderr)
            assert text in result.stderr, (name, result.stderr)
        cancelled = run("cancel", str(running_job))
        assert cancelled.returncode == 0 and "cancelling" in cancelled.stderr
    missing_token = exporter(settings, "http://127.0.0.1:1", "", "watch", str(running_job), cwd=tmp_path)
    assert missing_token.returncode == 3 and "EXPORTER_TOKEN" in missing_token.stderr


async def test_batch_runs_concurrently_and_reports_failures(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path, owner: dict[str, Any]
) -> None:
    other_tool = await create_tool(pool, owner["user"], "forms", records=RECORDS[:5])
    batch = tmp_path / "batch.jsonl"
    batch.write_text(
        "# two good exports and one of a tool that does not exist\n"
        + "\n".join(
            json.dumps(item)
            for item in [
                {"tool_id": str(owner["tool"]), "format": "bundle"},
                {"tool_id": str(other_tool), "format": "bundle"},
                {"tool_id": str(uuid4()), "format": "bundle"},
            ]
        )
    )
    good = tmp_path / "good.json"
    good.write_text(json.dumps([{"tool_id": str(other_tool), "format": "bundle"}] * 2))
    with running(settings, tmp_path, workers=1) as (api, _):
        assert api is not None
        mixed = exporter(
            settings, api.url, owner["token"], "batch", str(batch), "--concurrency", "2", cwd=tmp_path
        )
        clean = exporter(settings, api.url, owner["token"], "batch", str(good), "-c", "2", cwd=tmp_path)
    assert mixed.returncode == 1, mixed.stderr
    assert "2 completed, 1 failed" in mixed.stderr
    assert "unknown_tool" in mixed.stderr
    assert clean.returncode == 0, clean.stderr
    assert "2 completed, 0 failed" in clean.stderr
    statuses = await pool.fetch("SELECT status::text FROM export_jobs WHERE tool_id = $1", other_tool)
    assert [r["status"] for r in statuses] == ["completed"] * 3


def test_help_documents_the_exit_codes() -> None:
    for command in ("submit", "watch", "download", "batch"):
        result = subprocess.run(
            [sys.executable, "-m", "service.cli", command, "--help"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        )
        assert "exit codes:" in result.stdout and "11  verification failed" in result.stdout
