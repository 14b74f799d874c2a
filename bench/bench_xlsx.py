"""XLSX export of 1,000,000 form submissions: rows/s and peak RSS, medians of several runs.

Uses bench/scratch.py's scratch database and bench_csv's child runner: each run is every step of the
forms-xlsx strategy in a fresh process, so ru_maxrss is the export's own.
Goal (issue 5): peak RSS under 300 MB; rows/s printed.

    .venv/bin/python bench/bench_xlsx.py [--records 1000000] [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics

from bench_csv import child_main, run_child
from scratch import scratch_database


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
    speeds, peaks = [], []
    with scratch_database(args.records) as (url, tool_id):
        for i in range(args.runs):
            result, peak = run_child("xlsx", url, tool_id)
            speeds.append(args.records / result["seconds"])
            peaks.append(peak)
            steps = ", ".join(f"{k} {v:.2f} s" for k, v in result.items() if k not in ("seconds", "size"))
            print(
                f"run {i + 1}: {result['seconds']:.1f} s ({result['size'] / 1e6:.0f} MB; {steps}), peak RSS {peak:.0f} MB",
                flush=True,
            )
    print(
        f"xlsx, {args.records} records, {args.runs} runs, medians: {statistics.median(speeds):,.0f} rows/s all steps; "
        f"peak RSS median {statistics.median(peaks):.0f} MB, max {max(peaks):.0f} MB (goal: RSS < 300 MB)"
    )


if __name__ == "__main__":
    main()
