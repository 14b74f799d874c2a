"""CSV export of 1,000,000 form submissions vs `psql \\copy` of the same rows, in one run.

Creates a scratch database (dropped at the end), inserts the records, then alternates:
our forms-csv strategy (every step, in a fresh child process so that ru_maxrss from wait4 is
the export's own peak RSS) and `psql -c "\\copy (SELECT ...) TO ..."` selecting the same
columns in the same order. Prints medians of rows/s of both, the ratio, and peak RSS.
Goal (issue 5): at least 50% of psql's rows/s, peak RSS under 150 MB.

    .venv/bin/python bench/bench_csv.py [--records 1000000] [--runs 3]

bench_xlsx.py and bench_pdf.py reuse the child helpers defined here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from scratch import measure_child, scratch_database

from service import seed_data, tools
from service.config import Settings
from service.db import create_pool
from service.steps import StepContext
from service.storage import LocalStorage
from service.strategies import load_registry

FIELDS = [f["name"] for f in seed_data.form_metadata()["fields"]]


async def _export(
    fmt: str, database_url: str, tool_id: uuid.UUID, workdir: Path, options: dict[str, Any]
) -> dict[str, float]:
    """The child: every step of the forms strategy for `fmt`, as a worker runs them."""
    settings = Settings(database_url=database_url, storage_dir=workdir)
    pool = await create_pool(settings)
    try:
        tool = await tools.get_tool(pool, tool_id)
        assert tool is not None
        strategy = load_registry()[("forms", fmt)]
        ctx = StepContext(
            job_id=uuid.uuid4(), user_id=None, attempt=1, format=fmt,
            options=strategy.options.model_validate(options), tool=tool, strategy=strategy.name,
            work_path=workdir / "work", pool=pool, settings=settings, storage=LocalStorage(workdir / "storage"),
        )  # fmt: skip
        timings: dict[str, float] = {}
        start = time.perf_counter()
        for step in strategy.steps:
            began = time.perf_counter()
            await step.run(ctx)
            timings[step.name] = time.perf_counter() - began
        assert ctx.package is not None
        return {"seconds": time.perf_counter() - start, "size": ctx.package.size, **timings}
    finally:
        await pool.close()


def run_child(
    fmt: str, database_url: str, tool_id: uuid.UUID, options: dict[str, Any] | None = None
) -> tuple[dict[str, float], float]:
    """Run one export in a fresh process: (its timings, its peak RSS in MB)."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{fmt}-") as tmp:
        args = [
            sys.executable,
            __file__,
            "--child",
            fmt,
            database_url,
            str(tool_id),
            tmp,
            json.dumps(options or {}),
        ]
        return measure_child(args, f"{fmt} export")


def child_main(argv: list[str]) -> None:
    fmt, url, tool_id, workdir, options = argv
    print(json.dumps(asyncio.run(_export(fmt, url, uuid.UUID(tool_id), Path(workdir), json.loads(options)))))


def psql_copy(database_url: str, tool_id: uuid.UUID, target: Path) -> float:
    """Seconds for psql to \\copy the same columns, in the same order, to a CSV file."""
    columns = ", ".join(["record_id", "created_at", *(f"data->>'{name}'" for name in FIELDS)])
    query = f"SELECT {columns} FROM tool_records WHERE tool_id = '{tool_id}' ORDER BY record_id"
    command = f"\\copy ({query}) TO '{target}' WITH (FORMAT csv, HEADER)"
    start = time.perf_counter()
    subprocess.run(
        ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", database_url, "-c", command], check=True
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(args.child)
        return

    ours, write_only, theirs, peaks = [], [], [], []
    with scratch_database(args.records) as (url, tool_id), tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):
            seconds = psql_copy(url, tool_id, Path(tmp) / "psql.csv")
            size = (Path(tmp) / "psql.csv").stat().st_size
            result, peak = run_child("csv", url, tool_id)
            theirs.append(args.records / seconds)
            ours.append(args.records / result["seconds"])
            write_only.append(args.records / result["write"])
            peaks.append(peak)
            steps = ", ".join(f"{k} {v:.2f} s" for k, v in result.items() if k not in ("seconds", "size"))
            print(
                f"run {i + 1}: psql \\copy {seconds:.2f} s ({size / 1e6:.0f} MB); ours {result['seconds']:.2f} s "
                f"({result['size'] / 1e6:.0f} MB; {steps}), peak RSS {peak:.0f} MB",
                flush=True,
            )
    ratio = statistics.median(ours) / statistics.median(theirs)
    print(
        f"csv, {args.records} records, {args.runs} runs, medians: psql \\copy {statistics.median(theirs):,.0f} rows/s; "
        f"ours {statistics.median(ours):,.0f} rows/s all steps (ratio {ratio:.0%}), "
        f"{statistics.median(write_only):,.0f} rows/s write step alone "
        f"(ratio {statistics.median(write_only) / statistics.median(theirs):.0%}); "
        f"peak RSS median {statistics.median(peaks):.0f} MB, max {max(peaks):.0f} MB "
        f"(goal: ratio >= 50%, RSS < 150 MB)"
    )


if __name__ == "__main__":
    main()
