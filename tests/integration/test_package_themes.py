"""Format `package` for themes: CSS that parses and declares every token, assets copied
byte for byte and referenced, docs, and a package.json npm accepts."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from uuid import UUID

import asyncpg
import pytest
import tinycss2

from service import seed_data
from service.config import Settings
from service.errors import PermanentError
from tests.support import package_checks
from tests.support.run_steps import Run, context, export, extract

pytestmark = pytest.mark.timeout(300)


async def themes_tool(pool: asyncpg.Pool, **overrides: object) -> UUID:
    fields = {
        "tool_type": "themes",
        "name": "Ocean",
        "metadata": seed_data.theme_metadata(),
        "assets": seed_data.theme_assets(),
        **overrides,
    }
    async with pool.acquire() as conn:
        return await seed_data.insert_tool(conn, owner_id=None, **fields)  # type: ignore[arg-type]


@pytest.fixture
async def package(pool: asyncpg.Pool, settings: Settings, tmp_path: Path) -> tuple[Run, Path]:
    run = await export(pool, settings, await themes_tool(pool), tmp_path)
    return run, extract(run.archive, tmp_path / "out")


def root_variables(path: Path) -> dict[str, str]:
    rules = package_checks.css_rules(path)
    (root,) = [
        r for r in rules if r.type == "qualified-rule" and tinycss2.serialize(r.prelude).strip() == ":root"
    ]
    return package_checks.declarations(root)


async def test_css_declares_every_token_and_parses(package: tuple[Run, Path]) -> None:
    run, root = package
    manifest = package_checks.check_manifest(run.archive, root)
    assert manifest["strategy"] == "themes-package" and manifest["notes"] == []
    meta = seed_data.theme_metadata()
    variables = root_variables(root / "src/variables.css")
    for name, value in meta["colors"].items():
        assert variables[f"--color-{name}"] == value
    for name, value in meta["spacing"].items():
        assert variables[f"--space-{name}"] == value
    for name, value in meta["typography"]["scale"].items():
        assert variables[f"--font-size-{name}"] == value
    assert variables["--font-family-base"] == '"Ocean Sans", system-ui, sans-serif'
    assert variables["--line-height-base"] == "1.5"
    theme = package_checks.css_rules(root / "src/theme.css")
    selectors = {tinycss2.serialize(r.prelude).strip() for r in theme if r.type == "qualified-rule"}
    assert {".text-primary", ".bg-primary", ".p-md", ".font-size-h1"} <= selectors
    faces = [r for r in package_checks.css_rules(root / "src/fonts.css") if r.type == "at-rule"]
    assert len(faces) == 2
    for face in faces:
        src = package_checks.declarations(face)["src"]
        url = next(
            t for t in tinycss2.parse_component_value_list(src) if t.type == "function" and t.name == "url"
        )
        target = (root / "src" / url.arguments[0].value).resolve()
        assert target.is_file() and target.read_bytes().startswith(b"wOF2")
    background = package_checks.css_rules(root / "src/backgrounds.css")
    assert [tinycss2.serialize(r.prelude).strip() for r in background] == [".bg-image-hero"]
    imports = [r for r in package_checks.css_rules(root / "index.css") if r.type == "at-rule"]
    assert [tinycss2.serialize(r.prelude).strip() for r in imports] == [
        '"./src/variables.css"', '"./src/fonts.css"', '"./src/theme.css"', '"./src/backgrounds.css"',
    ]  # fmt: skip
    for path, _content_type, content in seed_data.theme_assets():
        assert (root / "assets" / path).read_bytes() == content


async def test_docs_and_npm_package(package: tuple[Run, Path]) -> None:
    _, root = package
    palette = (root / "docs/palette.md").read_text("utf-8")
    assert "| primary | `--color-primary` | `#1a73e8` |" in palette
    typography = (root / "docs/typography.md").read_text("utf-8")
    assert "| h1 | `--font-size-h1` | `2.5rem` |" in typography
    assert "assets/fonts/ocean\\-sans\\-bold\\.woff2" in typography
    pkg = json.loads((root / "package.json").read_text("utf-8"))
    assert pkg["name"] == "ocean" and pkg["style"] == "index.css"
    packed = subprocess.run(
        ["npm", "pack", "--dry-run", "--json", "--ignore-scripts"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert packed.returncode == 0, packed.stderr
    listed = {f["path"] for f in json.loads(packed.stdout)[0]["files"]}
    assert {
        "index.css",
        "src/variables.css",
        "assets/fonts/ocean-sans-regular.woff2",
        "docs/palette.md",
    } <= listed


async def test_invalid_css_values_are_left_out_with_a_note(
    pool: asyncpg.Pool, settings: Settings, tmp_path: Path
) -> None:
    meta = seed_data.theme_metadata()
    meta["colors"]["evil"] = "red; } body { display: none"
    meta["colors"]["url"] = "url(javascript:alert(1))"
    meta["spacing"]["huge"] = "10px;}*{color:red"
    meta["typography"]["fonts"].append({"family": "Gone", "src": "fonts/missing.woff2"})
    meta["backgrounds"]["nowhere"] = "../outside.png"
    run = await export(pool, settings, await themes_tool(pool, metadata=meta), tmp_path)
    root = extract(run.archive, tmp_path / "out")
    variables = root_variables(root / "src/variables.css")
    assert (
        "--color-evil" not in variables and "--color-url" not in variables and "--space-huge" not in variables
    )
    assert variables["--color-primary"] == "#1a73e8"
    for name in ("variables.css", "theme.css", "fonts.css", "backgrounds.css"):
        text = (root / "src" / name).read_text("utf-8")
        assert "display: none" not in text and "javascript" not in text
    notes = json.loads((root / "manifest.json").read_text("utf-8"))["notes"]
    skipped = {n.get("color") or n.get("spacing") or n.get("font") or n.get("background") for n in notes}
    assert skipped == {"evil", "url", "huge", "fonts/missing.woff2", "nowhere"}


async def test_same_tool_data_gives_a_byte_identical_archive(
    pool: asyncpg.Pool, settings: Settings, tmp_path: Path
) -> None:
    tool_id = await themes_tool(pool)
    first = await export(pool, settings, tool_id, tmp_path / "a")
    time.sleep(1.1)
    second = await export(pool, settings, tool_id, tmp_path / "b")
    assert first.archive.read_bytes() == second.archive.read_bytes()


async def test_each_step_leaves_its_outputs_and_undo_removes_them(
    pool: asyncpg.Pool, settings: Settings, tmp_path: Path
) -> None:
    strategy, run = await context(pool, settings, await themes_tool(pool), tmp_path)
    assert len(strategy.steps) == 6
    for step in strategy.steps:
        await step.run(run.ctx)
        assert all((run.ctx.workdir / o).exists() for o in step.outputs), step.name
    for step in reversed(strategy.steps):
        await step.undo(run.ctx)
    assert not await run.storage.exists(run.package.key)
    assert [
        p for p in (run.ctx.workdir / "pkg").rglob("*") if p.is_file() and p.name != "manifest.json"
    ] == []


@pytest.mark.parametrize("metadata", [{}, {"colors": {}}, {"colors": ["#fff"]}])
async def test_a_theme_without_colours_is_refused(
    pool: asyncpg.Pool, settings: Settings, tmp_path: Path, metadata: dict[str, object]
) -> None:
    strategy, run = await context(pool, settings, await themes_tool(pool, metadata=metadata), tmp_path)
    with pytest.raises(PermanentError) as raised:
        await strategy.steps[0].run(run.ctx)
    assert raised.value.code == "invalid_tool_data"
