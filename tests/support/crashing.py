"""Test-only strategies whose step kills the worker process, for the delivery-limit tests.

Registered with EXPORTER_STRATEGY_MODULES=tests.support.crashing. Tool type `crash-first`
dies in its first step; `crash-later` completes a step, then dies in the second. A step dies
only while the tool's metadata says {"crash": true}, so a test can "fix" the tool and replay.
Every run appends "<job id> <step>" to the file named by metadata["journal"].
"""

from __future__ import annotations

import hashlib
import os
import signal
from pathlib import Path

from service.steps import Package, Step, StepContext, StepFn, Strategy


def _journal(ctx: StepContext, line: str) -> None:
    with Path(ctx.tool.metadata["journal"]).open("a") as fh:
        fh.write(f"{ctx.job_id} {line}\n")


def _crash(name: str) -> StepFn:
    async def run(ctx: StepContext) -> None:
        _journal(ctx, name)
        if ctx.tool.metadata.get("crash"):
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no nack: as an OOM kill would
        await _finish(ctx, name)

    return run


def _ok(name: str) -> StepFn:
    async def run(ctx: StepContext) -> None:
        _journal(ctx, name)
        (ctx.workdir / f"out-{name}").write_text("done")

    return run


async def _finish(ctx: StepContext, name: str) -> None:
    path = ctx.workdir / "result.txt"
    path.write_text(f"job {ctx.job_id}\n")
    key = f"{ctx.job_id}/result.txt"
    await ctx.storage.put(key, path, "text/plain")
    data = path.read_bytes()
    ctx.package = Package(key, "result.txt", "text/plain", len(data), hashlib.sha256(data).hexdigest())


STRATEGIES = [
    Strategy(
        name="crash-first",
        tool_type="crash-first",
        format="package",
        steps=[Step("boom", "Crashing", _crash("boom"))],
    ),
    Strategy(
        name="crash-later",
        tool_type="crash-later",
        format="package",
        steps=[
            Step("prepare", "Preparing", _ok("prepare"), outputs=("out-prepare",)),
            Step("boom", "Crashing", _crash("boom")),
        ],
    ),
]
