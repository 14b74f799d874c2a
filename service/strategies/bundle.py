"""Format `bundle`: a ZIP of the tool's definition as JSON, its records as JSON Lines and
its assets under media/, with manifest.json; read back and verified before completing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from service import metrics, tools
from service.errors import PermanentError
from service.packaging.archive import (
    file_sha256,
    verify_archive,
    write_manifest,
    write_zip,
)
from service.steps import Package, Step, StepContext, StepFn, Strategy
from service.strategies.package_common import copy_assets

ROOT = "bundle"
ZIP_NAME = "bundle.zip"


def _root(ctx: StepContext) -> Path:
    return ctx.workdir / ROOT


async def validate(ctx: StepContext) -> None:
    if not ctx.tool.name.strip():
        raise PermanentError("the tool has no name", code="invalid_tool")


async def write_definition(ctx: StepContext) -> None:
    root = _root(ctx)
    root.mkdir(parents=True, exist_ok=True)
    definition = {
        "tool_id": str(ctx.tool.tool_id),
        "name": ctx.tool.name,
        "type": ctx.tool.type,
        "metadata": ctx.tool.metadata,
        "updated_at": ctx.tool.updated_at,
    }
    (root / "definition.json").write_text(
        json.dumps(definition, indent=2, sort_keys=True, ensure_ascii=False) + "\n", "utf-8"
    )


async def write_records(ctx: StepContext) -> None:
    total = await tools.count_records(ctx.pool, ctx.tool.tool_id)
    target = _root(ctx) / "records.jsonl"
    partial = target.with_suffix(".partial")
    written = 0
    with partial.open("w", encoding="utf-8") as out:
        async for batch in tools.stream_records(ctx.pool, ctx.tool.tool_id):
            lines = [
                f'{{"record_id":{r["record_id"]},"created_at":"{r["created_at"].isoformat()}","data":{r["data"]}}}\n'
                for r in batch
            ]
            out.writelines(lines)
            written += len(batch)
            metrics.ROWS_EXPORTED.labels("bundle").inc(len(batch))
            ctx.report(written / total if total else 1.0)
    partial.replace(target)


async def copy_media(ctx: StepContext) -> None:
    _copied, notes = await copy_assets(ctx, _root(ctx) / "media", "media")
    skipped = [{"path": note["asset"], "reason": note["skipped"]} for note in notes]
    if skipped:
        (_root(ctx) / "skipped_assets.json").write_text(json.dumps(skipped, indent=2) + "\n", "utf-8")


async def remove_media(ctx: StepContext) -> None:
    shutil.rmtree(_root(ctx) / "media", ignore_errors=True)


async def package(ctx: StepContext) -> None:
    root = _root(ctx)
    archive = ctx.workdir / ZIP_NAME
    meta = {
        "tool": {"tool_id": str(ctx.tool.tool_id), "name": ctx.tool.name, "type": ctx.tool.type},
        "strategy": ctx.strategy,
        "created_at": ctx.tool.updated_at,
    }

    def build() -> tuple[int, str]:
        write_manifest(root, meta)
        write_zip(root, archive)
        verify_archive(archive)  # read back before anyone can download it
        return archive.stat().st_size, file_sha256(archive)

    size, sha256 = await ctx.in_thread(build)
    filename = _filename(ctx)
    key = f"{ctx.job_id}/{filename}"
    await ctx.storage.put(key, archive, "application/zip")
    ctx.package = Package(key, filename, "application/zip", size, sha256)


async def delete_package(ctx: StepContext) -> None:
    await ctx.storage.delete(f"{ctx.job_id}/{_filename(ctx)}")


def _filename(ctx: StepContext) -> str:
    return f"{ctx.tool.type}-{ctx.tool.tool_id}-bundle.zip"


def _remove(name: str) -> StepFn:
    async def undo(ctx: StepContext) -> None:
        (_root(ctx) / name).unlink(missing_ok=True)

    return undo


STEPS = (
    Step("validate", "Validating tool", validate, retryable=False),
    Step(
        "definition",
        "Writing tool definition",
        write_definition,
        undo=_remove("definition.json"),
        outputs=(f"{ROOT}/definition.json",),
    ),
    Step(
        "records",
        "Writing records as JSON Lines",
        write_records,
        undo=_remove("records.jsonl"),
        outputs=(f"{ROOT}/records.jsonl",),
    ),
    Step("media", "Copying media assets", copy_media, undo=remove_media, outputs=(f"{ROOT}/media",)),
    Step("package", "Packaging and verifying ZIP", package, undo=delete_package),
)

STRATEGIES = [
    Strategy(name=f"{tool_type}-bundle", tool_type=tool_type, format="bundle", steps=STEPS)
    for tool_type in ("forms", "workflows", "themes")
]
