"""PDF export of 10,000 form submissions: seconds and peak RSS, medians of several runs.

Uses bench/scratch.py's scratch database and bench_csv's child runner: each run is every step of the
forms-pdf strategy in a fresh process. Issue 5 asks for the seconds to be printed.

    .venv/bin/python bench/bench_pdf.py [--records 10000] [--runs 5]
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
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(args.child)
        return
    seconds, peaks = [], []
    with scratch_database(args.records) as (url, tool_id):
        for i in range(args.runs):
            result, peak = run_child("pdf", url, tool_id)
            seconds.append(result["seconds"])
            peaks.append(peak)
            steps = ", ".join(f"{k} {v:.2f} s" for k, v in result.items() if k not in ("seconds", "size"))
            print(
                f"run {i + 1}: {result['seconds']:.2f} s ({result['size'] / 1e6:.1f} MB; {steps}), peak RSS {peak:.0f} MB",
                flush=True,
            )
    print(
        f"pdf, {args.records} records, {args.runs} runs, medians: {statistics.median(seconds):.2f} s "
        f"({args.records / statistics.median(seconds):,.0f} rows/s); peak RSS median {statistics.median(peaks):.0f} MB"
    )


if __name__ == "__main__":
    main()
