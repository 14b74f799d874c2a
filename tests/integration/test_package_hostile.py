"""Hostile tool data: names, field names and asset paths built to break out of their place.

Every generated file must still be valid for its reader, and every hostile string must
come back from that reader exactly (or folded onto one line where the target cannot hold
a line break): nothing injected becomes an instruction, a statement or markup.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import stat
import subprocess
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import jsonschema
import pytest
import tinycss2
from markdown_it import MarkdownIt

from service import seed_data, tools
from service.config import Settings
from service.packaging.escape import one_line
from tests.support import package_checks, typescript
from tests.support.run_steps import export, extract

pytestmark = pytest.mark.timeout(600)

HOSTILE = [
    'Robert"); DROP TABLE form_submissions; --',
    "O'Brien's \"quoted\" form, with commas",
    "line one\nline two\r\nRUN touch pwned-run\n# heading",
    "$(touch pwned-cmd) `touch pwned-tick` ${HOME} $HOME",
    "{{ 7*7 }} {% if true %}jinja{% endif %} {# comment #}",
    "x" * 5000,
    "Zoë 名前 😀 \u202eevil\u2028sep",
    "-- sql */ /* <script>alert(1)</script> | pipe [link](http://x) *em* _u_",
    "back\\slash \\n \\",
    "\ttab\x0bvt\x1bescape",
]
NAME = "; ".join(HOSTILE[:5]) + " Zoë 😀"
DOCKER_INSTRUCTIONS = [
    "FROM", "WORKDIR", "COPY", "RUN", "COPY", "RUN",
    "FROM", "ENV", "WORKDIR", "COPY", "RUN", "COPY", "COPY", "COPY", "LABEL", "USER", "EXPOSE", "CMD",
]  # fmt: skip


def hostile_form() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    kinds = [
        "text",
        "number",
        "checkbox",
        "date",
        "multiselect",
        "select",
        "textarea",
        "email",
        "text",
        "url",
    ]
    fields = [
        {"name": h, "label": h, "type": kinds[i % len(kinds)], "required": i == 0, "options": [h, "b"]}
        for i, h in enumerate(HOSTILE)
    ]
    fields.append({"name": "名前", "label": "duplicate after sanitising", "type": "text"})
    fields.append({"name": "submission_id", "label": "clashes with a fixed column", "type": "text"})
    records = [{h: h for h in HOSTILE} | {"名前": "x", "submission_id": "y"}, {h: None for h in HOSTILE}]
    return {"title": NAME, "form_id": HOSTILE[0], "fields": fields}, records


def hostile_workflow() -> dict[str, Any]:
    ids = HOSTILE[:6]
    return {
        "title": NAME,
        "description": HOSTILE[2],
        "initial_state": ids[0],
        "states": [
            {"id": s, "label": s, "type": "end" if s == ids[-1] else "task", "description": s} for s in ids
        ],
        "transitions": [{"from": a, "to": b, "event": a, "label": b} for a, b in itertools.pairwise(ids)],
    }


async def insert(pool: asyncpg.Pool, tool_type: str, name: str, metadata: dict[str, Any], **kw: Any) -> UUID:
    async with pool.acquire() as conn:
        return await seed_data.insert_tool(
            conn, owner_id=None, tool_type=tool_type, name=name, metadata=metadata, **kw
        )


def _text(inline: Any) -> str:
    """An inline token's text with Markdown escapes resolved, as a reader displays it."""
    return "".join(
        c.content for c in inline.children or [] if c.type in ("text", "text_special", "code_inline")
    )


def markdown_texts(path: Path) -> tuple[list[str], list[list[str]]]:
    """Headings' text and table rows' cells, as a Markdown reader sees them."""
    tokens = MarkdownIt("commonmark").enable("table").parse(path.read_text("utf-8"))
    headings: list[str] = []
    rows: list[list[str]] = []
    row: list[str] | None = None
    for i, token in enumerate(tokens):
        if token.type == "heading_open":
            headings.append(_text(tokens[i + 1]))
        elif token.type == "tr_open":
            row = []
        elif token.type == "inline" and row is not None:
            row.append(_text(token))
        elif token.type == "tr_close":
            rows.append(row or [])
            row = None
    return headings, rows


def check_dockerfile(root: Path, title: str) -> None:
    path = root / "Dockerfile"
    assert package_checks.instructions(path) == DOCKER_INSTRUCTIONS
    assert package_checks.final_user(path) == "node"
    labels = package_checks.dockerfile(path).labels
    # dockerfile-parse keeps `\$` and `\\` as written; Docker reads them as `$` and `\`.
    label = re.sub(r"\\([\\$])", r"\1", labels["org.opencontainers.image.title"])
    assert label == one_line(title)


def check_compose(root: Path, title: str) -> None:
    compose = package_checks.parse_yaml(root / "docker-compose.yml")
    assert set(compose) == {"services", "volumes"} and set(compose["services"]) == {"db", "app"}
    # Compose reads `$$` as a literal `$`, so no interpolation happens.
    assert compose["services"]["app"]["labels"]["org.opencontainers.image.title"] == title.replace("$", "$$")


def check_setup_script(root: Path, tmp_path: Path, name: str) -> None:
    """Run scripts/setup.sh with a stand-in npm: it names the tool and runs only npm."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    npm = bin_dir / "npm"
    npm.write_text(f'#!/bin/sh\necho "$*" >> {tmp_path}/npm-calls\n')
    npm.chmod(npm.stat().st_mode | stat.S_IEXEC)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "DATABASE_URL": "postgres://unused", "HOME": str(tmp_path)}
    result = subprocess.run(["sh", "scripts/setup.sh"], cwd=root, env=env, capture_output=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"Setting up {name}\n".encode())  # bytes: no newline translation
    calls = (tmp_path / "npm-calls").read_text().splitlines()
    assert calls == ["install --no-audit --no-fund", "run build", "run migrate", "run load"]
    assert not [p for p in (*root.rglob("pwned*"), *tmp_path.glob("pwned*"))]


@pytest.mark.parametrize("name", HOSTILE, ids=lambda h: re.sub(r"\W+", "_", h)[:20])
async def test_hostile_tool_names_stay_in_their_place(
    pool: asyncpg.Pool, settings: Settings, tmp_path: Path, name: str
) -> None:
    metadata = {**seed_data.form_metadata(), "title": name}
    run = await export(pool, settings, await insert(pool, "forms", name, metadata), tmp_path)
    root = extract(run.archive, tmp_path / "out")
    package_checks.check_manifest(run.archive, root)
    assert json.loads((root / "manifest.json").read_text("utf-8"))["tool"]["name"] == name
    package_checks.parse_json_files(root)
    assert re.fullmatch(r"[a-z0-9][a-z0-9-]*", json.loads((root / "package.json").read_text())["name"])
    check_dockerfile(root, name)
    check_compose(root, name)
    check_setup_script(root, tmp_path, name)
    headings, _ = markdown_texts(root / "README.md")
    assert headings[0] == one_line(name)
    assert "49" not in headings[0]  # `{{ 7*7 }}` is text, never evaluated


async def test_hostile_form_fields_give_valid_sql_typescript_and_docs(
    pool: asyncpg.Pool, settings: Settings, tmp_path: Path, servers: tuple[str, str]
) -> None:
    metadata, records = hostile_form()
    run = await export(pool, settings, await insert(pool, "forms", NAME, metadata, records=records), tmp_path)
    root = extract(run.archive, tmp_path / "out")
    package_checks.check_manifest(run.archive, root)
    fields = [f["name"] for f in metadata["fields"]]
    assert json.loads((root / "data/form-schema.json").read_text("utf-8")) == metadata

    async with package_checks.scratch_database(servers[0]) as url:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute((root / "db/migrations/0001_init.up.sql").read_text("utf-8"))
            tables = {
                r["tablename"]
                for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            }
            assert tables == {"form_definition", "form_submissions"}
            assert await conn.fetchval("SELECT title FROM form_definition") == NAME
            assert await conn.fetchval("SELECT form_id FROM form_definition") == HOSTILE[0]
            comments = await conn.fetch(
                "SELECT attname, col_description(attrelid, attnum) AS field FROM pg_attribute"
                " WHERE attrelid = 'form_submissions'::regclass AND attnum > 0 ORDER BY attnum"
            )
            assert [c["field"] for c in comments if c["field"] is not None] == fields
            columns = [c["attname"] for c in comments]
            assert len(set(columns)) == len(columns) and all(
                re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", c) for c in columns
            )
            with (root / "data/submissions.csv").open("rb") as fh:
                header = fh.readline().decode().strip().split(",")
                fh.seek(0)
                await conn.copy_to_table(
                    "form_submissions", source=fh, columns=header, format="csv", header=True
                )
            row = await conn.fetchrow("SELECT * FROM form_submissions ORDER BY submission_id LIMIT 1")
            by_field = dict(zip(fields, columns[2:], strict=False))
            for i in (0, 5, 6, 7, 8, 9):  # text, select, textarea, email, text, url: exactly as sent
                assert row[by_field[HOSTILE[i]]] == HOSTILE[i]
            for i in (1, 2, 3):  # number, checkbox, date holding text: NULL, kept in `data`
                assert row[by_field[HOSTILE[i]]] is None
            assert json.loads(row[by_field[HOSTILE[4]]]) == HOSTILE[4]  # multiselect: jsonb
            assert json.loads(row["data"]) == records[0]
        finally:
            await conn.close()

    typescript.build(root)
    printed = typescript.node(
        root,
        "-e",
        {},
        args=["console.log(JSON.stringify(require('./dist/model').FIELDS.map((f) => f.name)))"],
    )
    assert printed.returncode == 0, printed.stderr
    assert json.loads(printed.stdout) == fields

    _, rows = markdown_texts(root / "README.md")
    field_rows = [r for r in rows if len(r) == 4 and r[3] in ("yes", "no")]
    assert [one_line(r[0]) for r in field_rows] == [one_line(f) for f in fields]


async def test_hostile_workflow_gives_valid_schemas_sql_and_docs(
    pool: asyncpg.Pool, settings: Settings, tmp_path: Path, servers: tuple[str, str]
) -> None:
    metadata = hostile_workflow()
    records = [
        {"execution_id": h, "status": h, "current_state": h, "history": [{"state": h, "at": h}]}
        for h in HOSTILE
    ]
    run = await export(
        pool, settings, await insert(pool, "workflows", NAME, metadata, records=records), tmp_path
    )
    root = extract(run.archive, tmp_path / "out")
    package_checks.check_manifest(run.archive, root)
    workflow = json.loads((root / "data/workflow.json").read_text("utf-8"))
    assert [s["id"] for s in workflow["states"]] == HOSTILE[:6]
    jsonschema.validate(workflow, json.loads((root / "schemas/workflow.schema.json").read_text("utf-8")))
    check_dockerfile(root, NAME)
    check_compose(root, NAME)
    headings, rows = markdown_texts(root / "README.md")
    assert headings[0] == one_line(NAME)
    state_rows = [r for r in rows if len(r) == 4 and r[2] in ("start", "task", "end")]
    assert [r[0] for r in state_rows] == [one_line(s) for s in HOSTILE[:6]]
    # No `|` in a name split a row: 2-column and 4-column tables only, with every state and transition.
    assert {len(r) for r in rows} == {2, 4}
    assert sum(len(r) == 4 for r in rows) == 2 + 6 + 5

    async with package_checks.scratch_database(servers[0]) as url:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute((root / "db/migrations/0001_init.up.sql").read_text("utf-8"))
            with (root / "data/executions.csv").open("rb") as fh:
                header = fh.readline().decode().strip().split(",")
                fh.seek(0)
                await conn.copy_to_table(
                    "workflow_executions", source=fh, columns=header, format="csv", header=True
                )
            loaded = await conn.fetch(
                "SELECT external_id, status FROM workflow_executions ORDER BY execution_id"
            )
            assert [r["external_id"] for r in loaded] == HOSTILE
        finally:
            await conn.close()
    typescript.build(root)


async def test_hostile_theme_names_give_valid_css_and_docs(
    pool: asyncpg.Pool, settings: Settings, tmp_path: Path
) -> None:
    metadata = seed_data.theme_metadata("; ".join(HOSTILE))
    metadata["colors"] = {h: "#123456" for h in HOSTILE}
    metadata["spacing"] = {h: "4px" for h in HOSTILE}
    metadata["typography"]["font_family"] = HOSTILE[1] + "\n}" + HOSTILE[7]
    metadata["typography"]["fallback"] = [HOSTILE[0], "serif"]
    for font in metadata["typography"]["fonts"]:
        font["family"] = HOSTILE[7]
    metadata["backgrounds"] = {h: "backgrounds/waves.png" for h in HOSTILE}
    tool_id = await insert(pool, "themes", NAME, metadata, assets=seed_data.theme_assets())
    run = await export(pool, settings, tool_id, tmp_path)
    root = extract(run.archive, tmp_path / "out")
    package_checks.check_manifest(run.archive, root)
    assert json.loads((root / "manifest.json").read_text("utf-8"))["notes"] == []
    for css in ("index.css", "src/variables.css", "src/theme.css", "src/fonts.css", "src/backgrounds.css"):
        package_checks.css_rules(root / css)
    rules = package_checks.css_rules(root / "src/variables.css")
    assert len(rules) == 1  # one :root rule, nothing broke out of it
    variables = package_checks.declarations(rules[0])
    colors = [k for k in variables if k.startswith("--color-")]
    assert len(colors) == len(HOSTILE) and all(re.fullmatch(r"--color-[a-z0-9-]+", c) for c in colors)
    faces = [r for r in package_checks.css_rules(root / "src/fonts.css") if r.type == "at-rule"]
    family = tinycss2.parse_component_value_list(package_checks.declarations(faces[0])["font-family"])
    assert [t.value for t in family if t.type == "string"] == [HOSTILE[7]]
    backgrounds = package_checks.css_rules(root / "src/backgrounds.css")
    assert len(backgrounds) == len(HOSTILE)
    _, rows = markdown_texts(root / "docs/palette.md")
    # jsonb keeps object keys in its own order (shorter first), so compare as sets.
    assert sorted(one_line(r[0]) for r in rows[1:]) == sorted(one_line(h) for h in HOSTILE)
    assert all(len(r) == 5 for r in rows)


UNSAFE_PATHS = [
    "../escape.png",
    "images/../../escape2.png",
    "/etc/passwd.png",
    "..\\windows.png",
    "images\\..\\..\\win2.png",
    "C:/drive.png",
    "images/./dot.png",
    "images//double.png",
    "images/" + "n" * 300 + ".png",  # longer than a file name may be
    "clash",  # a file, then a directory of the same name below
    "clash/inner.png",
]


@pytest.mark.parametrize(("tool_type", "base"), [("forms", "data/assets"), ("themes", "assets")])
async def test_hostile_asset_paths_never_leave_the_root(
    pool: asyncpg.Pool,
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    tool_type: str,
    base: str,
) -> None:
    good = [
        ("images/ok.png", "image/png", seed_data.png()),
        ("images/ok.png", "image/png", b"second with the same path"),
        ("IMAGES/OK.png", "image/png", b"same path but for case"),
        ("fonts/Zoë 名前.woff2", "font/woff2", b"wOF2 unicode"),
    ]
    assets = [*good, *((p, "image/png", b"evil") for p in UNSAFE_PATHS)]
    metadata = seed_data.form_metadata() if tool_type == "forms" else seed_data.theme_metadata()
    tool_id = await insert(pool, tool_type, "Assets", metadata, assets=assets)

    original = tools.iter_assets

    async def with_nul(pool: asyncpg.Pool, tool_id: UUID) -> AsyncIterator[tuple[str, str, bytes]]:
        async for asset in original(pool, tool_id):
            yield asset
        yield (
            "images/nul\x00.png",
            "image/png",
            b"evil",
        )  # PostgreSQL text cannot hold NUL; a driver bug could

    monkeypatch.setattr(tools, "iter_assets", with_nul)
    run = await export(pool, settings, tool_id, tmp_path)
    with tarfile.open(run.archive) as tar:
        names = tar.getnames()
    assert all(not n.startswith("/") and ".." not in n.split("/") and "\\" not in n for n in names)
    root = extract(run.archive, tmp_path / "out")
    package_checks.check_manifest(run.archive, root)
    written = sorted(p for p in package_checks.files(root / base))
    assert written == sorted(["clash", "fonts/Zoë 名前.woff2", "images/ok.png"])
    assert (root / base / "images/ok.png").read_bytes() == seed_data.png()  # the first of the duplicates
    assert not list(tmp_path.rglob("escape*.png")) and not list(tmp_path.rglob("win*.png"))
    notes = json.loads((root / "manifest.json").read_text("utf-8"))["notes"]
    skipped = [n for n in notes if "asset" in n]
    assert len(skipped) == len(UNSAFE_PATHS) - 1 + 2 + 1  # all but "clash", two duplicates, the NUL
    assert all(n["skipped"] for n in skipped)
    assert os.path.commonpath([root.resolve(), *(p.resolve() for p in root.rglob("*"))]) == str(
        root.resolve()
    )
