"""`exporter run`: API, relay and workers in one foreground command; Ctrl-C stops them all."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import asyncpg
import httpx
import psutil

from service.config import Settings
from tests.support.api import bearer
from tests.support.data import create_tool, create_user
from tests.support.processes import free_port, settings_env, start


async def test_run_serves_jobs_and_ctrl_c_stops_everything(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    user = await create_user(pool, ["exporter"])
    tool = await create_tool(pool, user, "themes", records=[{"a": 1}])
    port, metrics_port = free_port(), free_port()
    env = settings_env(settings, http_port=port, metrics_port=metrics_port)
    proc = start(["run", "--workers", "2"], env, f"http://127.0.0.1:{port}/readyz", tmp_path / "run.log")
    try:
        children = psutil.Process(proc.popen.pid).children(recursive=True)
        assert len(children) == 2
        client = httpx.Client(base_url=proc.url, headers=bearer(settings, user, ["exporter"]), timeout=10)
        job = client.post("/v1/exports", json={"tool_id": str(tool), "format": "bundle"}).json()
        deadline = time.monotonic() + 30
        while client.get(f"/v1/exports/{job['job_id']}").json()["status"] != "completed":
            assert time.monotonic() < deadline, proc.log()
            time.sleep(0.1)
        proc.popen.send_signal(signal.SIGINT)
        assert proc.popen.wait(30) == 0, proc.log()
        assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    finally:
        proc.stop(signal.SIGKILL)
