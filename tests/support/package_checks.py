"""Checks of a generated package with the real readers of each file type."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import tinycss2
import yaml
from dockerfile_parse import DockerfileParser

from service.packaging.archive import verify_archive
from tests.support import infra


def files(root: Path) -> list[str]:
    return sorted(
        p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and not p.is_symlink()
    )


def check_manifest(archive: Path, root: Path) -> dict[str, Any]:
    """The archive matches its manifest, and the extracted tree holds exactly those files."""
    manifest = verify_archive(archive)
    assert sorted(f["path"] for f in manifest["files"]) == [f for f in files(root) if f != "manifest.json"]
    return manifest


def parse_json_files(root: Path) -> dict[str, Any]:
    return {p.relative_to(root).as_posix(): json.loads(p.read_text("utf-8")) for p in root.rglob("*.json")}


def parse_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text("utf-8"))


def dockerfile(path: Path) -> DockerfileParser:
    parser = DockerfileParser(path=str(path))
    return parser


def instructions(path: Path) -> list[str]:
    return [i["instruction"] for i in dockerfile(path).structure if i["instruction"] != "COMMENT"]


def final_user(path: Path) -> str:
    """The USER the runtime (last) stage runs as."""
    user = "root"
    for item in dockerfile(path).structure:
        if item["instruction"] == "FROM":
            user = "root"
        elif item["instruction"] == "USER":
            user = item["value"].strip()
    return user


def css_rules(path: Path) -> list[Any]:
    """The stylesheet's top-level rules; fails on any parse error."""
    rules = tinycss2.parse_stylesheet(path.read_text("utf-8"), skip_comments=True, skip_whitespace=True)
    errors = [r for r in rules if r.type == "error"]
    assert not errors, errors
    for rule in rules:
        if rule.type == "qualified-rule" or (rule.type == "at-rule" and rule.content is not None):
            for decl in tinycss2.parse_blocks_contents(
                rule.content, skip_comments=True, skip_whitespace=True
            ):
                assert decl.type != "error", (path, decl)
    return list(rules)


def declarations(rule: Any) -> dict[str, str]:
    found = tinycss2.parse_blocks_contents(rule.content, skip_comments=True, skip_whitespace=True)
    return {d.name: tinycss2.serialize(d.value).strip() for d in found if d.type == "declaration"}


@contextlib.asynccontextmanager
async def scratch_database(admin_url: str) -> AsyncIterator[str]:
    """An empty database for a generated package's own migrations; dropped afterwards."""
    name = infra.unique_name("pkg")
    await infra.create_database(admin_url, name)
    try:
        yield infra.with_database(admin_url, name)
    finally:
        await infra.drop_database(admin_url, name)
