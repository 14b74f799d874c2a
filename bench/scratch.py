"""What the benchmarks share: a scratch database holding one forms tool, and running one
export in a fresh child process so that its peak RSS (ru_maxrss from wait4) is its own."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from urllib.parse import urlparse, urlunparse

import asyncpg

from service import migrations, seed_data

ADMIN_URL = os.environ.get("EXPORTER_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def with_database(url: str, name: str) -> str:
    return urlunparse(urlparse(url)._replace(path=f"/{name}"))


async def _prepare(name: str, records: int, assets: Iterable[seed_data.Asset]) -> uuid.UUID:
    admin = await asyncpg.connect(ADMIN_URL)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    conn = await asyncpg.connect(with_database(ADMIN_URL, name))
    try:
        await migrations.up(conn)
        start = time.perf_counter()
        tool_id = await seed_data.insert_tool(
            conn,
            owner_id=None,
            tool_type="forms",
            name="Benchmark form",
            metadata=seed_data.form_metadata(),
            records=seed_data.form_submissions(records),
            assets=assets,
        )
        await conn.execute("ANALYZE tool_records")
        print(f"inserted {records} submissions in {time.perf_counter() - start:.1f} s", flush=True)
        return tool_id
    finally:
        await conn.close()


async def _drop(name: str) -> None:
    admin = await asyncpg.connect(ADMIN_URL)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@contextmanager
def scratch_database(records: int, assets: Iterable[seed_data.Asset] = ()) -> Iterator[tuple[str, uuid.UUID]]:
    """(database URL, forms tool id) of a new database holding `records` submissions."""
    name = f"exporter_bench_{uuid.uuid4().hex[:8]}"
    try:
        tool_id = asyncio.run(_prepare(name, records, assets))
        yield with_database(ADMIN_URL, name), tool_id
    finally:
        asyncio.run(_drop(name))


def measure_child(argv: list[str], what: str) -> tuple[dict[str, float], float]:
    """Run `argv`, which prints one JSON object: (that object, the child's peak RSS in MB)."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{what} child failed with exit code {proc.returncode}")
    return json.loads(out), usage.ru_maxrss / 1024  # Linux reports KiB
