"""The API and each worker expose Prometheus metrics that move when jobs run."""

from __future__ import annotations

import time
from pathlib import Path

import asyncpg
import httpx
from prometheus_client.parser import text_string_to_metric_families

from service.config import Settings
from tests.support.api import bearer
from tests.support.data import create_tool, create_user
from tests.support.processes import running


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = httpx.get(url, timeout=5).text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_metrics_move_with_a_job(settings: Settings, pool: asyncpg.Pool, tmp_path: Path) -> None:
    user = await create_user(pool, ["exporter"])
    tool = await create_tool(pool, user, "workflows", records=[{"n": 1}])
    with running(settings, tmp_path) as (api, workers):
        assert api is not None
        client = httpx.Client(base_url=api.url, headers=bearer(settings, user, ["exporter"]), timeout=10)
        job = client.post("/v1/exports", json={"tool_id": str(tool), "format": "bundle"}).json()
        deadline = time.monotonic() + 30
        while client.get(f"/v1/exports/{job['job_id']}").json()["status"] != "completed":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        time.sleep(1.5)  # one monitor interval
        api_metrics = scrape(f"{api.url}/metrics")
        worker_metrics = scrape(f"{workers[0].url}/metrics")

    labels = frozenset({("tool_type", "workflows"), ("format", "bundle")})
    assert api_metrics[("exporter_jobs_submitted_total", labels)] == 1
    assert (
        api_metrics[
            (
                "exporter_http_requests_total",
                frozenset({("route", "/v1/exports"), ("method", "POST"), ("status", "202")}),
            )
        ]
        == 1
    )
    assert api_metrics[("exporter_jobs_by_status", frozenset({("status", "completed")}))] == 1
    assert api_metrics[("exporter_outbox_backlog", frozenset())] == 0
    done = labels | {("status", "completed")}
    assert worker_metrics[("exporter_jobs_finished_total", done)] == 1
    assert worker_metrics[("exporter_job_duration_seconds_count", done)] == 1
    step = frozenset({("strategy", "workflows-bundle"), ("step", "records"), ("outcome", "completed")})
    assert worker_metrics[("exporter_step_duration_seconds_count", step)] == 1
    assert worker_metrics[("exporter_queue_messages", frozenset({("queue", "requests")}))] == 0
    assert worker_metrics[("exporter_dlq_messages", frozenset())] == 0
    assert worker_metrics[("exporter_rows_exported_total", frozenset({("format", "bundle")}))] == 1
