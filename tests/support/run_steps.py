"""Runs a strategy's steps in order on a StepContext, the way the orchestrator would,
without the job bookkeeping: for tests and benchmarks of strategies."""

from __future__ import annotations

import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from uuid import UUID, uuid4

import asyncpg

from service import tools
from service.config import Settings
from service.steps import NoOptions, Package, StepContext, Strategy
from service.storage import LocalStorage
from service.strategies import load_registry


@dataclass
class Run:
    ctx: StepContext
    storage: LocalStorage
    fractions: list[float] = field(default_factory=list)

    @property
    def package(self) -> Package:
        assert self.ctx.package is not None, "the last step did not set ctx.package"
        return self.ctx.package

    @property
    def archive(self) -> Path:
        return self.storage.path(self.package.key)


async def context(
    pool: asyncpg.Pool, settings: Settings, tool_id: UUID, workdir: Path, fmt: str = "package"
) -> tuple[Strategy, Run]:
    tool = await tools.get_tool(pool, tool_id)
    assert tool is not None
    strategy = load_registry()[(tool.type, fmt)]
    storage = LocalStorage(workdir / "storage")
    ctx = StepContext(
        job_id=uuid4(),
        user_id=None,
        attempt=1,
        format=fmt,
        options=NoOptions(),
        tool=tool,
        strategy=strategy.name,
        work_path=workdir / "work",
        pool=pool,
        settings=settings,
        storage=storage,
    )
    ctx.workdir.mkdir(parents=True, exist_ok=True)
    run = Run(ctx, storage)
    ctx.report = run.fractions.append
    return strategy, run


async def run_steps(strategy: Strategy, ctx: StepContext, *, until: str | None = None) -> None:
    """Run the steps in order; with `until`, stop after the step of that name."""
    for step in strategy.steps:
        await step.run(ctx)
        if step.name == until:
            return


async def export(
    pool: asyncpg.Pool, settings: Settings, tool_id: UUID, workdir: Path, fmt: str = "package"
) -> Run:
    strategy, run = await context(pool, settings, tool_id, workdir, fmt)
    await run_steps(strategy, run.ctx)
    return run


def extract(archive: Path, dest: Path) -> Path:
    """Extract with the `data` filter, which refuses any entry that would leave `dest`."""
    with tarfile.open(archive, "r:gz") as tar:
        tar.extractall(dest, filter="data")
    return dest
