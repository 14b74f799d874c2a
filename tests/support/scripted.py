"""A test-only strategy whose steps do what the tool's metadata scripts them to do.

Registered by tests through EXPORTER_STRATEGY_MODULES=tests.support.scripted (tool type
`scripted`), so failures are injected from test data, never by switches in production code.
Metadata: {"journal": "/path/file", "steps": {"s2": {"fail_times": 2, "error": "transient",
"sleep": 1.0, "undo_error": true}}}. Every run and undo appends a line to the journal.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

from service.errors import PermanentError, TransientError
from service.steps import Package, Step, StepContext, StepFn, Strategy

NAMES = ("s1", "s2", "s3", "s4")


def journal(ctx: StepContext, line: str) -> None:
    path = ctx.tool.metadata.get("journal")
    if path:
        with Path(path).open("a") as fh:
            fh.write(f"{ctx.job_id} {line}\n")


def read_journal(path: Path) -> list[str]:
    return [line.split(" ", 1)[1] for line in path.read_text().splitlines()] if path.exists() else []


def _run(name: str) -> StepFn:
    async def run(ctx: StepContext) -> None:
        script = ctx.tool.metadata.get("steps", {}).get(name, {})
        journal(ctx, f"run:{name}")
        counter = ctx.workdir / f"tries-{name}"
        tries = int(counter.read_text()) + 1 if counter.exists() else 1
        counter.write_text(str(tries))
        if tries <= script.get("fail_times", 0):
            if script.get("error", "transient") == "transient":
                raise TransientError(f"{name} flaked (try {tries})")
            raise PermanentError(f"{name} broke", code="scripted_failure")
        if script.get("fail_with"):
            raise ValueError(script["fail_with"])
        if script.get("sleep"):
            await asyncio.sleep(script["sleep"])
        (ctx.workdir / f"out-{name}").write_text("done")
        if name == NAMES[-1]:
            await _package(ctx)

    return run


def _undo(name: str) -> StepFn:
    async def undo(ctx: StepContext) -> None:
        journal(ctx, f"undo:{name}")
        if ctx.tool.metadata.get("steps", {}).get(name, {}).get("undo_error"):
            raise RuntimeError(f"undo of {name} failed")
        (ctx.workdir / f"out-{name}").unlink(missing_ok=True)
        if name == NAMES[-1]:
            await ctx.storage.delete(f"{ctx.job_id}/scripted.txt")

    return undo


async def _package(ctx: StepContext) -> None:
    path = ctx.workdir / "scripted.txt"
    path.write_text(f"job {ctx.job_id}\n")
    key = f"{ctx.job_id}/scripted.txt"
    await ctx.storage.put(key, path, "text/plain")
    data = path.read_bytes()
    ctx.package = Package(key, "scripted.txt", "text/plain", len(data), hashlib.sha256(data).hexdigest())


STRATEGIES = [
    Strategy(
        name="scripted",
        tool_type="scripted",
        format="package",
        steps=[
            Step(name, f"Running {name}", _run(name), undo=_undo(name), outputs=(f"out-{name}",))
            for name in NAMES
        ],
    )
]
