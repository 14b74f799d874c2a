"""Pieces every `package` strategy shares: the package root, notes, asset copying,
streaming records to CSV, the Node.js service scaffolding and the final archive step."""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import asyncpg

from service import tools
from service.errors import InvalidInput, PermanentError
from service.packaging import escape
from service.packaging.archive import file_sha256, safe_relpath, write_manifest, write_tar_gz
from service.packaging.render import render_to
from service.steps import Package, Step, StepContext, StepFn

__all__ = [
    "NODE_DEPENDENCIES",
    "NODE_DEV_DEPENDENCIES",
    "NODE_SCAFFOLD",
    "PKG",
    "archive_step",
    "copy_assets",
    "pkg_root",
    "remove",
    "render_files",
    "require",
    "write_json",
    "write_node_scaffold",
    "write_notes",
    "write_records_csv",
]

PKG = "pkg"
NOTES = "notes"
CONTENT_TYPE = "application/gzip"

# Exact versions: a package built today installs the same tree next year.
NODE_DEPENDENCIES = {"express": "5.1.0", "pg": "8.16.3", "pg-copy-streams": "6.0.6"}
NODE_DEV_DEPENDENCIES = {
    "@types/express": "5.0.3",
    "@types/node": "20.19.9",
    "@types/pg": "8.15.5",
    "@types/pg-copy-streams": "1.2.5",
    "typescript": "5.9.3",
}
TSCONFIG = {
    "compilerOptions": {
        "target": "ES2022",
        "module": "commonjs",
        "moduleResolution": "node",
        "lib": ["ES2022"],
        "types": ["node"],
        "rootDir": "src",
        "outDir": "dist",
        "strict": True,
        "esModuleInterop": True,
        "skipLibCheck": True,
        "forceConsistentCasingInFileNames": True,
    },
    "include": ["src/**/*.ts"],
}
# Files write_node_scaffold writes, relative to the package root.
NODE_SCAFFOLD = ("package.json", "tsconfig.json", "src/db.ts", "src/migrate.ts", "src/load.ts", ".gitignore")


def pkg_root(ctx: StepContext) -> Path:
    return ctx.workdir / PKG


def require(condition: bool, message: str) -> None:
    """Validation: a tool whose data cannot make a package fails once, without retries."""
    if not condition:
        raise PermanentError(message, code="invalid_tool_data")


def write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n", "utf-8")


def write_notes(ctx: StepContext, step: str, notes: Sequence[dict[str, str]]) -> None:
    """What a step skipped or changed, for the manifest; also marks the step as done."""
    write_json(ctx.workdir / NOTES / f"{step}.json", list(notes))


def _read_notes(ctx: StepContext) -> list[dict[str, str]]:
    notes: list[dict[str, str]] = []
    for path in sorted((ctx.workdir / NOTES).glob("*.json")):
        notes.extend(json.loads(path.read_text("utf-8")))
    return notes


def remove(*names: str, notes: str | None = None) -> StepFn:
    """An undo that removes the files or directories a step wrote (relative to the root)."""

    async def undo(ctx: StepContext) -> None:
        for name in names:
            target = pkg_root(ctx) / name
            if target.is_dir():
                shutil.rmtree(target, ignore_errors=True)
            else:
                target.unlink(missing_ok=True)
        if notes is not None:
            (ctx.workdir / NOTES / f"{notes}.json").unlink(missing_ok=True)

    return undo


def render_files(ctx: StepContext, files: Iterable[tuple[str, str]], **context: Any) -> None:
    """Render (target, template) pairs into the package root."""
    root = pkg_root(ctx)
    for target, template in files:
        render_to(root / target, template, **context)


def write_node_scaffold(
    ctx: StepContext,
    *,
    name: str,
    description: str,
    csv_path: str,
    copy_sql: str,
    exists_sql: str,
    after_sql: str = "",
) -> None:
    """package.json, tsconfig.json and the database helpers both Node.js services use.

    src/load.ts runs `exists_sql` (already loaded?), then `copy_sql` (a COPY … FROM STDIN)
    on the CSV at `csv_path`, then `after_sql`, in one transaction.
    """
    root = pkg_root(ctx)
    write_json(
        root / "package.json",
        {
            "name": escape.slug(name, default=ctx.tool.type),
            "version": "1.0.0",
            "private": True,
            "description": escape.one_line(description)[:200],
            "license": "UNLICENSED",
            "main": "dist/server.js",
            "engines": {"node": ">=20"},
            "scripts": {
                "build": "tsc",
                "typecheck": "tsc --noEmit",
                "migrate": "node dist/migrate.js",
                "load": "node dist/load.js",
                "start": "node dist/server.js",
            },
            "dependencies": NODE_DEPENDENCIES,
            "devDependencies": NODE_DEV_DEPENDENCIES,
        },
    )
    write_json(root / "tsconfig.json", TSCONFIG)
    render_files(
        ctx,
        [
            ("src/db.ts", "node/db.ts"),
            ("src/migrate.ts", "node/migrate.ts"),
            ("src/load.ts", "node/load.ts"),
            (".gitignore", "node/gitignore"),
        ],
        csv_path=csv_path,
        copy_sql=copy_sql,
        exists_sql=exists_sql,
        after_sql=after_sql,
    )


async def copy_assets(ctx: StepContext, base: Path, step: str) -> tuple[list[str], list[dict[str, str]]]:
    """Write the tool's assets under `base`; unsafe or clashing paths are skipped and noted,
    never written (one odd asset should not cost the owner the whole export).

    Returns the paths written and the notes, for the caller's write_notes.
    """
    base.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - one local mkdir, as the writes below
    notes: list[dict[str, str]] = []
    seen: set[str] = set()
    copied: list[str] = []
    async for path, _content_type, content in tools.iter_assets(ctx.pool, ctx.tool.tool_id):
        try:
            rel = safe_relpath(path)
        except InvalidInput as exc:
            notes.append({"step": step, "asset": ascii(path), "skipped": exc.message})
            continue
        if rel.casefold() in seen:
            notes.append({"step": step, "asset": rel, "skipped": "duplicate path"})
            continue
        target = base / rel
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
        except OSError as exc:  # a/b next to a file named a, or a name the filesystem refuses
            notes.append({"step": step, "asset": rel, "skipped": exc.strerror or type(exc).__name__})
            continue
        seen.add(rel.casefold())
        copied.append(rel)
    return copied, notes


async def write_records_csv(
    ctx: StepContext,
    target: Path,
    header: Sequence[str],
    to_row: Callable[[asyncpg.Record], Sequence[object]],
) -> int:
    """Stream the tool's records into a CSV file, batch by batch; returns the row count."""
    total = await tools.count_records(ctx.pool, ctx.tool.tool_id)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    written = 0
    with partial.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)

        def write(rows: list[asyncpg.Record]) -> None:
            ctx.check_cancelled()
            writer.writerows(to_row(r) for r in rows)

        async for batch in tools.stream_records(ctx.pool, ctx.tool.tool_id):
            await ctx.in_thread(write, batch)
            written += len(batch)
            ctx.report(written / total if total else 1.0)
    partial.replace(target)  # a crash never leaves a complete-looking, truncated CSV
    return written


def _filename(ctx: StepContext) -> str:
    return f"{ctx.tool.type}-{ctx.tool.tool_id}-package.tar.gz"


def _key(ctx: StepContext) -> str:
    return f"{ctx.job_id}/{_filename(ctx)}"


async def _archive(ctx: StepContext) -> None:
    root = pkg_root(ctx)
    archive = ctx.workdir / _filename(ctx)
    meta = {
        "tool": {"tool_id": str(ctx.tool.tool_id), "name": ctx.tool.name, "type": ctx.tool.type},
        "strategy": ctx.strategy,
        "created_at": ctx.tool.updated_at,  # the data's time, so the archive is reproducible
        "notes": _read_notes(ctx),
    }

    def build() -> tuple[int, str]:
        write_manifest(root, meta)
        ctx.check_cancelled()
        ctx.report(0.5)
        write_tar_gz(root, archive)
        return archive.stat().st_size, file_sha256(archive)

    size, sha256 = await ctx.in_thread(build)
    await ctx.storage.put(_key(ctx), archive, CONTENT_TYPE)
    ctx.package = Package(_key(ctx), _filename(ctx), CONTENT_TYPE, size, sha256)


async def _delete_archive(ctx: StepContext) -> None:
    await ctx.storage.delete(_key(ctx))
    (ctx.workdir / _filename(ctx)).unlink(missing_ok=True)


def archive_step() -> Step:
    """The last step of every package: manifest.json, a reproducible .tar.gz, storage."""
    return Step(
        "archive",
        "Packaging files into a .tar.gz archive",
        _archive,
        undo=_delete_archive,
    )
