"""Status and list endpoints under load with 1,000,000 jobs in the table (1,000 users).

Creates a scratch database (dropped at the end), bulk-inserts the jobs with generate_series,
starts `exporter api` as a subprocess and loads it from a separate process: wrk when it is
installed (`apt-get install -y wrk`), else an async httpx load generator in a subprocess.
Prints requests per second and p50/p99 latency of GET /v1/exports/{id} and of
GET /v1/exports (history pages, first and deeper), each the median of RUNS runs, at two
loads: 16 connections (saturates the single API process: throughput, latency with queueing)
and 2 connections (latency of a request without waiting behind others); then the EXPLAIN
of both queries.

The per-user status rate limit (10/s by default) is raised for the run: the load comes from
a few hundred simulated users at thousands of requests a second, and we measure the
endpoint's own cost (the limiter's check stays in the path).

    .venv/bin/python bench/bench_status.py [--jobs 1000000] [--duration 10] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from service import jobs, migrations  # noqa: E402
from service.api.auth import issue_token  # noqa: E402
from service.api.exports import encode_cursor  # noqa: E402

ADMIN_URL = os.environ.get("EXPORTER_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
AMQP_URL = os.environ.get("EXPORTER_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
SECRET = "bench-secret-0123456789abcdef-0123456789"  # noqa: S105 - a scratch database's tokens
USERS = 1000
SAMPLE = 5000  # distinct jobs (and their owners' tokens) the load cycles through

FILL = """
INSERT INTO export_jobs (tool_id, user_id, status, format, steps_total, steps_completed,
                         progress_percentage, current_step, created_at, updated_at, started_at,
                         completed_at, package_path, package_size_bytes, package_sha256)
SELECT t.tools[1 + g % array_length(t.tools, 1)],
       t.users[1 + g % array_length(t.users, 1)],
       s.status, 'bundle', 5,
       CASE WHEN s.status = 'completed' THEN 5 WHEN s.status = 'in_progress' THEN 2 ELSE 0 END,
       CASE WHEN s.status = 'completed' THEN 100 WHEN s.status = 'in_progress' THEN 47 ELSE 0 END,
       CASE WHEN s.status = 'in_progress' THEN 'Writing records' END,
       now() - make_interval(secs => g * 2.5), now() - make_interval(secs => g * 2.5),
       now() - make_interval(secs => g * 2.5),
       CASE WHEN s.status IN ('completed', 'failed', 'cancelled') THEN now() END,
       CASE WHEN s.status = 'completed' THEN 'pkg/' || g || '/bundle.zip' END,
       CASE WHEN s.status = 'completed' THEN 123456 END,
       CASE WHEN s.status = 'completed' THEN md5(g::text) || md5(g::text) END
FROM generate_series($1::int, $2::int) g,
     LATERAL (SELECT (ARRAY['completed', 'completed', 'completed', 'failed', 'cancelled',
                            'in_progress', 'pending'])[1 + g % 7]::export_job_status AS status) s,
     (SELECT $3::uuid[] AS users, $4::uuid[] AS tools) t
"""


def unique(kind: str) -> str:
    return f"exporter_bench_{kind}_{os.getpid()}"


async def build(db_url: str, n_jobs: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Schema, users, tools and jobs; returns (status paths, list paths) with owners' tokens."""
    conn = await asyncpg.connect(db_url)
    try:
        await migrations.up(conn)
        users = [
            r["user_id"]
            for r in await conn.fetch(
                "INSERT INTO users (email, roles) SELECT 'u' || g || '@bench', '{exporter}'"
                " FROM generate_series(1, $1) g RETURNING user_id",
                USERS,
            )
        ]
        tools = [
            r["tool_id"]
            for r in await conn.fetch(
                "INSERT INTO tool_registry (tool_name, tool_type, owner_id)"
                " SELECT 'tool ' || g, 'forms', $1 FROM generate_series(1, 20) g RETURNING tool_id",
                users[0],
            )
        ]
        began = time.perf_counter()
        step = 250_000
        for start in range(1, n_jobs + 1, step):
            await conn.execute(FILL, start, min(n_jobs, start + step - 1), users, tools)
        await conn.execute("VACUUM ANALYZE export_jobs")
        print(f"filled {n_jobs:,} jobs for {USERS:,} users in {time.perf_counter() - began:.1f}s")
        sample = await conn.fetch(
            "SELECT job_id, user_id FROM export_jobs TABLESAMPLE SYSTEM (1) LIMIT $1", SAMPLE
        )
        tokens = {u: issue_token(SECRET, u, ["exporter"], 24 * 3600) for u in users}
        status = [(f"/v1/exports/{r['job_id']}", tokens[r["user_id"]]) for r in sample]
        listing: list[tuple[str, str]] = []
        for i, user in enumerate(users[:500]):
            path = "/v1/exports?limit=20"
            if i % 2:  # half of them ask for a deeper page, through a real cursor
                rows = await conn.fetch(
                    "SELECT created_at, job_id FROM export_jobs WHERE user_id = $1"
                    " ORDER BY created_at DESC, job_id DESC OFFSET $2 LIMIT 1",
                    user,
                    n_jobs // USERS // 2 + i % 10,
                )
                path += "&cursor=" + encode_cursor(rows[0])
            listing.append((path, tokens[user]))
        return status, listing
    finally:
        await conn.close()


async def explain(db_url: str, status_path: str, depth: int) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        job_id = status_path.rsplit("/", 1)[1]
        plan = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + jobs.GET_JOB, job_id)
        print("\nEXPLAIN status query (GET /v1/exports/{id}):")
        print("\n".join("  " + r[0] for r in plan))
        user = await conn.fetchval("SELECT user_id FROM export_jobs WHERE job_id = $1", job_id)
        cursor = await conn.fetchrow(
            "SELECT created_at, job_id FROM export_jobs WHERE user_id = $1"
            " ORDER BY created_at DESC, job_id DESC OFFSET $2 LIMIT 1",
            user,
            depth,
        )
        sql, args = jobs.list_query(jobs.JobFilter(user_id=user), (cursor[0], cursor[1]), 21)
        plan = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + sql, *args)
        print(
            f"\nEXPLAIN list query (GET /v1/exports?limit=20&cursor=…, page {depth // 20 + 1} of a user's history):"
        )
        print("\n".join("  " + r[0] for r in plan))
    finally:
        await conn.close()


WRK_SCRIPT = """
local targets = {}
-- Built in init(): wrk.format needs wrk.host, which a thread knows only by then.
function init(args)
  for line in io.lines("%s") do
    local path, token = line:match("([^ ]+) ([^ ]+)")
    targets[#targets + 1] = wrk.format("GET", path, {["Authorization"] = "Bearer " .. token})
  end
end
local i = 0
request = function()
  i = i %% #targets + 1
  return targets[i]
end
"""


def run_wrk(
    url: str, targets: list[tuple[str, str]], duration: int, connections: int, tmp: Path
) -> dict[str, float]:
    listing = tmp / "targets.txt"
    listing.write_text("".join(f"{p} {t}\n" for p, t in targets))
    script = tmp / "rotate.lua"
    script.write_text(WRK_SCRIPT % listing)
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    if "Non-2xx" in out and not os.environ.get("BENCH_DEBUG"):
        raise RuntimeError(f"non-2xx answers under load:\n{out}")

    def ms(label: str) -> float:
        match = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
        assert match, out
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return {"rps": rps, "p50": ms("50"), "p99": ms("99")}


LOADER = """
import asyncio, json, sys, time
import httpx

async def main(url, targets, duration, connections):
    latencies, errors = [], 0
    deadline = time.perf_counter() + duration
    async with httpx.AsyncClient(base_url=url, limits=httpx.Limits(max_connections=connections)) as client:
        async def worker(offset):
            nonlocal errors
            i = offset
            while time.perf_counter() < deadline:
                path, token = targets[i % len(targets)]
                i += connections
                began = time.perf_counter()
                r = await client.get(path, headers={"Authorization": "Bearer " + token})
                latencies.append((time.perf_counter() - began) * 1000)
                errors += r.status_code != 200
        await asyncio.gather(*(worker(k) for k in range(connections)))
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]
    print(json.dumps({"rps": len(latencies) / duration, "p50": pick(0.5), "p99": pick(0.99), "errors": errors}))

asyncio.run(main(sys.argv[1], json.load(open(sys.argv[2])), float(sys.argv[3]), int(sys.argv[4])))
"""


def run_httpx(
    url: str, targets: list[tuple[str, str]], duration: int, connections: int, tmp: Path
) -> dict[str, float]:
    data = tmp / "targets.json"
    data.write_text(json.dumps(targets))
    out = subprocess.run(
        [sys.executable, "-c", LOADER, url, str(data), str(duration), str(connections)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result: dict[str, float] = json.loads(out)
    if result.pop("errors"):
        raise RuntimeError(f"non-2xx answers under load: {result}")
    return result


def start_api(db_url: str, prefix: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXPORTER_")}
    env.update(
        {
            "EXPORTER_DATABASE_URL": db_url,
            "EXPORTER_AMQP_URL": AMQP_URL,
            "EXPORTER_JWT_SECRET": SECRET,
            "EXPORTER_HTTP_PORT": str(port),
            "EXPORTER_TOPOLOGY_PREFIX": prefix,
            "EXPORTER_STATUS_RATE_LIMIT": "1000000",
            "EXPORTER_LOG_LEVEL": "WARNING",
            "EXPORTER_STORAGE_DIR": str(log.parent / "storage"),
        }
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "api", "--no-relay"],
        env=env,
        cwd=REPO,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"API did not start:\n{log.read_text()}")


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--duration", type=int, default=10, help="seconds per run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16, help="for throughput (saturating)")
    parser.add_argument("--latency-connections", type=int, default=2, help="for latency (no queueing)")
    parser.add_argument("--loader", choices=("auto", "wrk", "httpx"), default="auto")
    args = parser.parse_args()
    loader = "wrk" if args.loader == "auto" and shutil.which("wrk") else args.loader
    loader = "httpx" if loader == "auto" else loader
    load = run_wrk if loader == "wrk" else run_httpx

    name = unique("db")
    admin = await asyncpg.connect(ADMIN_URL)
    await admin.execute(f'CREATE DATABASE "{name}"')
    db_url = ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    proc = None
    try:
        status_targets, list_targets = await build(db_url, args.jobs)
        with tempfile.TemporaryDirectory() as tmpdir:
            tmp = Path(tmpdir)
            port = 18000 + os.getpid() % 1000
            proc = start_api(db_url, name, port, tmp / "api.log")
            url = f"http://127.0.0.1:{port}"
            load(url, status_targets, 3, args.connections, tmp)  # warm-up: pool, caches, plans
            results = {}
            for label, targets in (("status", status_targets), ("list", list_targets)):
                for mode, connections in (
                    ("throughput", args.connections),
                    ("latency", args.latency_connections),
                ):
                    runs = [load(url, targets, args.duration, connections, tmp) for _ in range(args.runs)]
                    results[label, mode] = median_of(runs)
        print(f"\nload: {loader}, {args.runs} runs of {args.duration}s each, medians")
        print(f"{'endpoint':42} {'connections':>11} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
        names = {"status": "GET /v1/exports/{id} (status)", "list": "GET /v1/exports?limit=20[&cursor]"}
        for (label, mode), r in results.items():
            conns = args.connections if mode == "throughput" else args.latency_connections
            print(f"{names[label]:42} {conns:>11} {r['rps']:8.0f} {r['p50']:8.2f} {r['p99']:8.2f}")
        print("goal: status p99 < 10 ms, list p99 < 25 ms")
        print(f"machine: {os.cpu_count()} cores shared by the API, PostgreSQL and the load generator")
        await explain(db_url, status_targets[0][0], args.jobs // USERS // 2)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(20)
        await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await admin.close()
        await drop_topology(name)


async def drop_topology(prefix: str) -> None:
    import aio_pika

    connection = await aio_pika.connect(AMQP_URL)
    try:
        for queue in (f"{prefix}.requests", f"{prefix}.dead"):
            async with connection.channel() as channel:
                await channel.queue_delete(queue)
        for exchange in (prefix, f"{prefix}.dlx", f"{prefix}.events"):
            async with connection.channel() as channel:
                await channel.exchange_delete(exchange)
    finally:
        await connection.close()


if __name__ == "__main__":
    asyncio.run(main())
