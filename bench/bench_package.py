"""Forms `package` export of a tool with 100,000 submissions: median seconds and peak RSS.

Creates a scratch database, inserts the tool, then runs the strategy's steps N times, each
in a fresh child process so that its peak RSS (ru_maxrss from wait4) is the export's own.
Goal (issue 4): under 10 s and under 200 MB. Prints the figures; does not judge them.

    .venv/bin/python bench/bench_package.py [--records 100000] [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from scratch import measure_child, scratch_database

from service import seed_data, tools
from service.config import Settings
from service.db import create_pool
from service.steps import NoOptions, StepContext
from service.storage import LocalStorage
from service.strategies import load_registry


async def export_once(database_url: str, tool_id: uuid.UUID, workdir: Path) -> dict[str, float]:
    """The child: run every step of the forms package strategy, as a worker would."""
    settings = Settings(database_url=database_url, storage_dir=workdir)
    pool = await create_pool(settings)
    try:
        tool = await tools.get_tool(pool, tool_id)
        assert tool is not None
        strategy = load_registry()[("forms", "package")]
        ctx = StepContext(
            job_id=uuid.uuid4(), user_id=None, attempt=1, format="package", options=NoOptions(), tool=tool,
            strategy=strategy.name, work_path=workdir / "work", pool=pool, settings=settings,
            storage=LocalStorage(workdir / "storage"),
        )  # fmt: skip
        timings = {}
        start = time.perf_counter()
        for step in strategy.steps:
            began = time.perf_counter()
            await step.run(ctx)
            timings[step.name] = time.perf_counter() - began
        assert ctx.package is not None
        return {"seconds": time.perf_counter() - start, "size": ctx.package.size, **timings}
    finally:
        await pool.close()


def run_child(database_url: str, tool_id: uuid.UUID) -> tuple[dict[str, float], float]:
    with tempfile.TemporaryDirectory(prefix="bench-package-") as tmp:
        return measure_child([sys.executable, __file__, "--child", database_url, str(tool_id), tmp], "export")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--child", nargs=3, metavar=("DATABASE_URL", "TOOL_ID", "WORKDIR"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        url, tool_id, workdir = args.child
        print(json.dumps(asyncio.run(export_once(url, uuid.UUID(tool_id), Path(workdir)))))
        return

    logo = [("images/logo.png", "image/png", seed_data.png(2, 2))]
    with scratch_database(args.records, logo) as (database_url, tool_id):
        seconds, peaks = [], []
        for i in range(args.runs):
            result, peak_mb = run_child(database_url, tool_id)
            seconds.append(result["seconds"])
            peaks.append(peak_mb)
            steps = ", ".join(f"{k} {v:.2f}" for k, v in result.items() if k not in ("seconds", "size"))
            print(
                f"run {i + 1}: {result['seconds']:.2f} s, peak RSS {peak_mb:.0f} MB, archive {result['size'] / 1e6:.1f} MB ({steps})"
            )
        print(
            f"forms package, {args.records} submissions, {args.runs} runs: "
            f"median {statistics.median(seconds):.2f} s, peak RSS median {statistics.median(peaks):.0f} MB, "
            f"max {max(peaks):.0f} MB (goal: < 10 s, < 200 MB)"
        )


if __name__ == "__main__":
    main()
