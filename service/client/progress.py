"""Following a job: adaptive polling (ETag + Retry-After) or Server-Sent Events, with a bar."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn, TimeElapsedColumn

from service.client.http import EXIT, ApiClient, ApiError, error_of

__all__ = ["TERMINAL", "follow", "watch"]

TERMINAL = frozenset({"completed", "failed", "rolled_back", "cancelled"})
Update = Callable[[dict[str, Any]], None]


def eta(job: dict[str, Any], now: float) -> str:
    """Time left, extrapolated from the time spent since the job started and its progress."""
    percent = job.get("progress_percentage") or 0
    started = job.get("started_at")
    if job.get("status") in TERMINAL:
        return "0:00:00"
    if not started or percent <= 0:
        return "-:--:--"
    spent = now - datetime.fromisoformat(str(started).replace("Z", "+00:00")).timestamp()
    left = max(0, int(spent * (100 - percent) / percent))
    return f"{left // 3600}:{left % 3600 // 60:02d}:{left % 60:02d}"


async def poll(api: ApiClient, job_id: str, update: Update) -> dict[str, Any]:
    """Poll until terminal, sending If-None-Match and waiting as long as Retry-After says."""
    etag: str | None = None
    job: dict[str, Any] | None = None
    while True:
        fresh, response = await api.status(job_id, etag)
        if fresh is not None:
            job, etag = fresh, response.headers.get("etag")
            update(job)
        assert job is not None, "a 304 always follows a 200"
        if job["status"] in TERMINAL:
            return job
        await asyncio.sleep(float(response.headers.get("retry-after", "1")))


async def _frames(api: ApiClient, job_id: str) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    async with api.http.stream("GET", f"/v1/exports/{job_id}/events", timeout=None) as response:
        if response.status_code != 200:
            await response.aread()
            raise error_of(response)
        event, data = "", ""
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
            elif line == "" and event:
                yield event, json.loads(data)
                event, data = "", ""


async def stream_events(api: ApiClient, job_id: str, update: Update) -> dict[str, Any]:
    """Follow the job's Server-Sent Events; falls back to polling if the stream breaks."""
    # A dropped stream is not an error: polling picks up from the job's current state.
    with contextlib.suppress(httpx.TransportError, httpx.StreamError, ValueError):
        async for event, job in _frames(api, job_id):
            if event == "gone":
                raise ApiError(410, "job_gone", f"export {job_id} was removed while watched")
            update(job)
            if event != "progress":
                return job
    return await poll(api, job_id, update)


async def follow(api: ApiClient, job_id: str, update: Update, *, events: bool = False) -> dict[str, Any]:
    return await (stream_events if events else poll)(api, job_id, update)


def _bar(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[step]}"),
        TextColumn("elapsed"),
        TimeElapsedColumn(),
        TextColumn("ETA {task.fields[eta]}"),
        console=console,
        transient=False,
    )


async def watch(
    api: ApiClient, job_id: str, console: Console, *, events: bool = False, timeout: float | None = None
) -> dict[str, Any]:
    """Follow a job with a progress bar: percentage, current step, elapsed time and ETA."""
    with _bar(console) as bar:
        task: TaskID = bar.add_task(job_id[:8], total=100, step="waiting", eta="-:--:--")

        def update(job: dict[str, Any]) -> None:
            step = job.get("current_step") or job["status"]
            done = f"{job['steps_completed']}/{job['steps_total']}"
            bar.update(
                task,
                completed=job["progress_percentage"],
                step=f"{done} {step}"[:60],
                eta=eta(job, time.time()),
                description=f"{job_id[:8]} {job['status']}",
            )

        try:
            return await asyncio.wait_for(follow(api, job_id, update, events=events), timeout)
        except TimeoutError:
            message = f"export {job_id} did not finish within {timeout:g}s"
            raise ApiError(None, "timeout", message, EXIT["timeout"]) from None
