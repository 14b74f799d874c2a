"""`exporter submit | watch | download | batch | cancel | retry`: the client side of the API.

The API URL and token come from EXPORTER_API_URL and EXPORTER_TOKEN, or --api-url/--token.
Network errors, 429 and 502-504 are retried with exponential backoff (honouring Retry-After).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from service.client.files import download, extract, verify
from service.client.http import EXIT, ApiClient, ApiError
from service.client.progress import follow, watch

__all__ = ["EXIT_CODES_HELP", "register_commands"]

DEFAULT_API_URL = "http://127.0.0.1:8000"
CONNECTION_HELP = (
    "The API URL and token come from EXPORTER_API_URL and EXPORTER_TOKEN, or --api-url/--token.\n"
    "Network errors, 429 and 502-504 are retried with exponential backoff, honouring Retry-After."
)
EXIT_CODES_HELP = """exit codes:
   0  success (the job completed; the download verified)
   1  the job ended failed, rolled_back or cancelled (batch: any item did)
   2  bad usage, or the API refused the request as invalid (422)
   3  not authenticated (401): missing, invalid or expired token
   4  forbidden (403): your roles don't allow it, or the download link is invalid/expired
   5  not found (404): no such job or tool, or it isn't yours
   6  conflict (409): not finished yet, already finished, Idempotency-Key reused
   7  gone (410): the package was removed by retention
   8  rate limited (429), still after retries
   9  server error (5xx), still after retries
  10  network error: the API could not be reached, still after retries
  11  verification failed: size, sha256 or manifest mismatch, or an unsafe archive
  12  timed out waiting (--timeout)
"""

Command = Callable[[argparse.Namespace, Console], Coroutine[Any, Any, int]]


def _options(pairs: list[str]) -> dict[str, Any]:
    """`k=v` pairs; a value that parses as JSON is taken as JSON (numbers, booleans, lists)."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ApiError(None, "usage", f"--option expects KEY=VALUE, got {pair!r}", EXIT["usage"])
        try:
            options[key] = json.loads(value)
        except ValueError:
            options[key] = value
    return options


def _api(args: argparse.Namespace) -> ApiClient:
    token = args.token or os.environ.get("EXPORTER_TOKEN")
    if not token:
        message = "no token: set EXPORTER_TOKEN or pass --token (`exporter token EMAIL` prints one)"
        raise ApiError(401, "missing_token", message)
    url = args.api_url or os.environ.get("EXPORTER_API_URL") or DEFAULT_API_URL
    return ApiClient(url, token, retries=args.retries, backoff=args.backoff, timeout=args.http_timeout)


def _outcome(job: dict[str, Any], console: Console) -> int:
    status = job["status"]
    if status == "completed":
        console.print(f"[green]completed[/] {job['job_id']} ({job['package_size_bytes']} bytes)")
        return EXIT["ok"]
    reason = f": {job.get('error_code')} {job.get('error_message') or ''}".rstrip()
    console.print(f"[red]{status}[/] {job['job_id']}{reason if job.get('error_code') else ''}")
    return EXIT["job_failed"]


async def _submit(args: argparse.Namespace, console: Console) -> int:
    async with _api(args) as api:
        job = await api.submit(args.tool_id, args.format, _options(args.option), args.idempotency_key)
        print(job["job_id"])
        if not args.wait:
            return EXIT["ok"]
        final = await watch(api, job["job_id"], console, events=args.events, timeout=args.timeout)
    return _outcome(final, console)


async def _watch(args: argparse.Namespace, console: Console) -> int:
    async with _api(args) as api:
        final = await watch(api, args.job_id, console, events=args.events, timeout=args.timeout)
    return _outcome(final, console)


async def _download(args: argparse.Namespace, console: Console) -> int:
    async with _api(args) as api:
        job, _ = await api.status(args.job_id)
        assert job is not None
        if job["status"] != "completed":
            raise ApiError(409, "not_completed", f"export {args.job_id} is {job['status']}, not completed")
        path = await download(api, job, args.output)
    manifest = verify(path, job)
    checked = f", {len(manifest['files'])} files match manifest.json" if manifest else ""
    console.print(f"[green]downloaded[/] {path} (sha256 verified{checked})")
    if args.extract:
        if manifest is None:
            raise ApiError(None, "usage", f"{path.name} is not an archive", EXIT["usage"])
        target = args.extract_to or path.with_name(path.name.split(".")[0] or "export")
        files = extract(path, target)
        console.print(f"extracted {len(files)} files to {target}")
    print(path)
    return EXIT["ok"]


async def _cancel(args: argparse.Namespace, console: Console) -> int:
    async with _api(args) as api:
        job = await api.cancel(args.job_id)
    console.print(f"{job['job_id']} {job['status']}")
    return EXIT["ok"]


async def _retry(args: argparse.Namespace, console: Console) -> int:
    async with _api(args) as api:
        job = await api.retry(args.job_id)
        console.print(f"{job['job_id']} attempt {job['attempt']} {job['status']}")
        if not args.wait:
            return EXIT["ok"]
        final = await watch(api, job["job_id"], console, events=args.events, timeout=args.timeout)
    return _outcome(final, console)


def _batch_items(path: Path) -> list[dict[str, Any]]:
    """A JSON array, or JSON Lines (blank lines and `#` comments skipped), of submit bodies."""
    text = path.read_text()
    try:
        items = json.loads(text) if text.lstrip().startswith("[") else None
        if items is None:
            lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
            items = [json.loads(line) for line in lines]
    except ValueError as exc:
        raise ApiError(None, "usage", f"{path}: not JSON or JSON Lines ({exc})", EXIT["usage"]) from None
    for n, item in enumerate(items, 1):
        if not isinstance(item, dict) or "tool_id" not in item or "format" not in item:
            raise ApiError(None, "usage", f"{path}: item {n} needs tool_id and format", EXIT["usage"])
    return list(items)


async def _batch(args: argparse.Namespace, console: Console) -> int:
    if args.concurrency < 1:
        raise ApiError(None, "usage", "--concurrency must be at least 1", EXIT["usage"])
    items = _batch_items(args.file)
    results: list[dict[str, Any]] = [{} for _ in items]
    limit = asyncio.Semaphore(args.concurrency)
    async with _api(args) as api:
        with Progress(console=console, transient=True) as bar:
            task = bar.add_task(f"{len(items)} exports", total=len(items))

            async def one(n: int, item: dict[str, Any]) -> None:
                async with limit:
                    began = time.monotonic()
                    try:
                        job = await api.submit(item["tool_id"], item["format"], item.get("options") or {})
                        job = await asyncio.wait_for(follow(api, job["job_id"], lambda _: None), args.timeout)
                        results[n] = {**job, "error": job.get("error_code") or ""}
                    except ApiError as exc:
                        results[n] = {"status": "error", "error": f"{exc.code}: {exc.message}"}
                    except TimeoutError:
                        results[n] = {"status": "timeout", "error": f"not finished in {args.timeout:g}s"}
                    results[n]["seconds"] = time.monotonic() - began
                    bar.advance(task)

            await asyncio.gather(*(one(n, item) for n, item in enumerate(items)))
    table = Table(title=f"batch {args.file.name}")
    for column in ("#", "tool", "format", "job", "status", "time", "error"):
        table.add_column(column)
    for n, (item, result) in enumerate(zip(items, results, strict=True), 1):
        ok = result["status"] == "completed"
        table.add_row(
            str(n),
            str(item["tool_id"])[:8],
            str(item["format"]),
            str(result.get("job_id", ""))[:8],
            f"[{'green' if ok else 'red'}]{result['status']}[/]",
            f"{result['seconds']:.1f}s",
            str(result.get("error", ""))[:60],
        )
    console.print(table)
    failed = sum(r["status"] != "completed" for r in results)
    console.print(f"{len(items) - failed} completed, {failed} failed")
    return EXIT["job_failed"] if failed else EXIT["ok"]


def _run(command: Command) -> Callable[[argparse.Namespace, Any], int]:
    def handler(args: argparse.Namespace, _settings: Any) -> int:
        # A client speaks through its console; per-request INFO logs would drown the bar.
        for name in ("httpx", "httpcore"):
            logging.getLogger(name).setLevel(logging.WARNING)
        console = Console(stderr=True, soft_wrap=True)  # paths stay whole for scripts to grep
        try:
            return asyncio.run(command(args, console))
        except ApiError as exc:
            console.print(f"[red]error:[/] {exc}", highlight=False)
            return exc.exit_code

    return handler


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("connection")
    group.add_argument("--api-url", help=f"API base URL (env EXPORTER_API_URL, default {DEFAULT_API_URL})")
    group.add_argument("--token", help="bearer token (env EXPORTER_TOKEN)")
    group.add_argument("--retries", type=int, default=5, help="retries on network errors, 429, 502-504")
    group.add_argument("--backoff", type=float, default=0.5, help="first retry delay in seconds, doubling")
    group.add_argument("--http-timeout", type=float, default=30.0, help="seconds per HTTP request")
    return common


def register_commands(sub: Any) -> None:
    """Add the client commands to the `exporter` parser."""
    common = _common()

    def add(name: str, command: Command, text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = sub.add_parser(
            name,
            help=text,
            description=f"{text}\n\n{CONNECTION_HELP}",
            epilog=EXIT_CODES_HELP,
            parents=[common],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        parser.set_defaults(handler=_run(command))
        return parser

    def following(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--events", action="store_true", help="follow Server-Sent Events, not polling")
        parser.add_argument("--timeout", type=float, default=None, help="give up waiting after SECONDS")

    p = add("submit", _submit, "submit an export; prints the job id")
    p.add_argument("tool_id")
    p.add_argument("--format", "-f", required=True, help="package, bundle, csv, xlsx or pdf")
    p.add_argument("--option", "-O", action="append", default=[], metavar="KEY=VALUE", help="repeatable")
    p.add_argument("--idempotency-key", help="resubmitting with the same key returns the same job")
    p.add_argument("--wait", action="store_true", help="follow the job to its end with a progress bar")
    following(p)
    p = add("watch", _watch, "follow a job with a progress bar until it ends")
    p.add_argument("job_id")
    following(p)
    p = add("download", _download, "download a finished package and verify every checksum")
    p.add_argument("job_id")
    p.add_argument("-o", "--output", type=Path, help="file or directory (default: current directory)")
    p.add_argument("--extract", action="store_true", help="also unpack it (never outside the target)")
    p.add_argument("--extract-to", type=Path, help="directory to unpack into (default: next to it)")
    p = add("batch", _batch, "run many exports; a summary table; exit 1 if any failed")
    p.add_argument("file", type=Path, help='JSON array or JSON Lines of {"tool_id", "format", "options"}')
    p.add_argument("--concurrency", "-c", type=int, default=4, help="exports in flight at once (default 4)")
    p.add_argument("--timeout", type=float, default=None, help="give up on an export after SECONDS")
    p = add("cancel", _cancel, "cancel a pending or running export")
    p.add_argument("job_id")
    p = add("retry", _retry, "run a failed, rolled back or cancelled export again")
    p.add_argument("job_id")
    p.add_argument("--wait", action="store_true", help="follow the new attempt with a progress bar")
    following(p)
