"""Format `package` for workflows: a Node.js + Express + TypeScript state-machine service
over PostgreSQL with the definition, the execution history, JSON Schemas, Docker and a
README documenting the workflow.

Reads the workflows metadata contract documented in service.seed_data.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import asyncpg

from service import tools
from service.steps import Step, StepContext, Strategy
from service.strategies.package_common import (
    NODE_SCAFFOLD,
    archive_step,
    copy_assets,
    pkg_root,
    remove,
    render_files,
    require,
    write_json,
    write_node_scaffold,
    write_notes,
    write_records_csv,
)

STATE_TYPES = ("start", "task", "end")
STATUSES = ("running", "completed", "failed", "cancelled")
COLUMNS = (
    "execution_id", "external_id", "status", "current_state", "started_at",
    "finished_at", "input", "history", "recorded_at",
)  # fmt: skip
COPY_SQL = f"COPY workflow_executions ({', '.join(COLUMNS)}) FROM STDIN WITH (FORMAT csv, HEADER true)"
EXISTS_SQL = "SELECT EXISTS (SELECT 1 FROM workflow_executions) AS loaded"
AFTER_SQL = (
    "SELECT setval(pg_get_serial_sequence('workflow_executions', 'execution_id'),"
    " COALESCE(MAX(execution_id), 0) + 1, false) FROM workflow_executions"
)
JSON_SCHEMA = "https://json-schema.org/draft/2020-12/schema"

ENGINE = (
    ("src/server.ts", "workflows/src/server.ts"),
    ("src/engine.ts", "workflows/src/engine.ts"),
    ("src/executions.ts", "workflows/src/executions.ts"),
    ("db/migrations/0001_init.up.sql", "workflows/db/0001_init.up.sql"),
    ("db/migrations/0001_init.down.sql", "workflows/db/0001_init.down.sql"),
    ("scripts/setup.sh", "node/setup.sh"),
)
DOCKER = (
    ("Dockerfile", "node/Dockerfile"),
    ("docker-compose.yml", "node/docker-compose.yml"),
    (".env.example", "node/env.example"),
    (".dockerignore", "node/dockerignore"),
)
SCHEMAS = ("schemas/workflow.schema.json", "schemas/execution.schema.json")


def _text(value: Any, default: str = "") -> str:
    return value if isinstance(value, str) else default


def definition(ctx: StepContext) -> dict[str, Any]:
    """The workflow in the engine's shape: every key present, every value of its type."""
    meta = ctx.tool.metadata
    states = [
        {
            "id": s["id"],
            "label": _text(s.get("label"), s["id"]),
            "type": s.get("type") if s.get("type") in STATE_TYPES else "task",
            "description": _text(s.get("description")),
        }
        for s in meta.get("states", [])
    ]
    transitions = [
        {"from": t["from"], "to": t["to"], "event": t["event"], "label": _text(t.get("label"), t["event"])}
        for t in meta.get("transitions", [])
    ]
    return {
        "workflow_id": _text(meta.get("workflow_id"), str(ctx.tool.tool_id)),
        "title": _text(meta.get("title")).strip() or ctx.tool.name,
        "description": _text(meta.get("description")),
        "initial_state": _text(meta.get("initial_state")) or states[0]["id"],
        "states": states,
        "transitions": transitions,
    }


async def validate(ctx: StepContext) -> None:
    meta = ctx.tool.metadata
    states, transitions = meta.get("states"), meta.get("transitions", [])
    require(bool(ctx.tool.name.strip()), "the tool has no name")
    require(isinstance(states, list) and len(states) > 0, "the workflow has no states")
    require(isinstance(transitions, list), "the workflow's transitions are not a list")
    assert isinstance(states, list) and isinstance(transitions, list)  # for the type checker
    ids = [s.get("id") if isinstance(s, dict) else None for s in states]
    require(all(isinstance(i, str) and i.strip() for i in ids), "every state needs an id")
    require(len(set(ids)) == len(ids), "two states share an id")
    initial = meta.get("initial_state")
    require(initial is None or initial in ids, f"the initial state {initial!r} is not a state")
    for t in transitions:
        ok = isinstance(t, dict) and t.get("from") in ids and t.get("to") in ids
        require(ok and isinstance(t.get("event"), str) and bool(t["event"]), f"invalid transition {t!r}")
    notes = [
        {"step": "validate", "state": s["id"], "note": f"unknown state type {s.get('type')!r} kept as task"}
        for s in states
        if s.get("type") not in STATE_TYPES
    ]
    write_notes(ctx, "validate", notes)


async def engine(ctx: StepContext) -> None:
    write_node_scaffold(
        ctx,
        name=ctx.tool.name,
        description=f"Workflow service: {definition(ctx)['title']}",
        csv_path="data/executions.csv",
        copy_sql=COPY_SQL,
        exists_sql=EXISTS_SQL,
        after_sql=AFTER_SQL,
    )
    render_files(ctx, ENGINE, name=ctx.tool.name)


def _timestamp(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value).isoformat()
    except ValueError:
        return None


def _execution_row(r: asyncpg.Record) -> list[object]:
    data = json.loads(r["data"])
    e = data if isinstance(data, dict) else {}
    history = e.get("history")
    return [
        r["record_id"],
        None if e.get("execution_id") is None else str(e["execution_id"]),
        e["status"] if isinstance(e.get("status"), str) and e["status"] else "unknown",
        e["current_state"] if isinstance(e.get("current_state"), str) else None,
        _timestamp(e.get("started_at")),
        _timestamp(e.get("finished_at")),
        json.dumps(e.get("input") if isinstance(e.get("input"), dict) else {}, ensure_ascii=False),
        json.dumps(history if isinstance(history, list) else [], ensure_ascii=False),
        r["created_at"].isoformat(),
    ]


async def copy_data(ctx: StepContext) -> None:
    root = pkg_root(ctx)
    write_json(root / "data" / "workflow.json", definition(ctx))
    _copied, notes = await copy_assets(ctx, pkg_root(ctx) / "data/assets", "data")
    write_notes(ctx, "data", notes)
    await write_records_csv(ctx, root / "data" / "executions.csv", COLUMNS, _execution_row)


def json_schemas(workflow: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """JSON Schemas of this workflow's definition and execution records; state names are
    enumerated, so a definition or execution naming an unknown state does not validate."""
    ids = [s["id"] for s in workflow["states"]]
    string = {"type": "string"}
    strict = {"type": "object", "additionalProperties": False}
    state = {
        **strict,
        "required": ["id", "label", "type", "description"],
        "properties": {
            "id": {"enum": ids},
            "label": string,
            "type": {"enum": list(STATE_TYPES)},
            "description": string,
        },
    }
    transition = {
        **strict,
        "required": ["from", "to", "event", "label"],
        "properties": {
            "from": {"enum": ids},
            "to": {"enum": ids},
            "event": {"type": "string", "minLength": 1},
            "label": string,
        },
    }
    step = {
        "type": "object",
        "required": ["state", "at"],
        "properties": {"state": {"enum": ids}, "event": {"type": ["string", "null"]}, "at": string},
    }
    return {
        "schemas/workflow.schema.json": {
            "$schema": JSON_SCHEMA,
            "title": f"Workflow definition: {workflow['title']}",
            **strict,
            "required": ["workflow_id", "title", "description", "initial_state", "states", "transitions"],
            "properties": {
                "workflow_id": string,
                "title": string,
                "description": string,
                "initial_state": {"enum": ids},
                "states": {"type": "array", "minItems": 1, "items": state},
                "transitions": {"type": "array", "items": transition},
            },
        },
        "schemas/execution.schema.json": {
            "$schema": JSON_SCHEMA,
            "title": f"Execution of the workflow: {workflow['title']}",
            "type": "object",
            "required": ["status", "current_state", "history"],
            "properties": {
                "execution_id": string,
                "status": {"enum": list(STATUSES)},
                "current_state": {"enum": ids},
                "started_at": string,
                "finished_at": {"type": ["string", "null"]},
                "input": {"type": "object"},
                "history": {"type": "array", "items": step},
            },
        },
    }


async def schemas(ctx: StepContext) -> None:
    for name, schema in json_schemas(definition(ctx)).items():
        write_json(pkg_root(ctx) / name, schema)


async def docker(ctx: StepContext) -> None:
    title = definition(ctx)["title"]
    render_files(ctx, DOCKER, title=title, description=f"Workflow service: {title}")


async def readme(ctx: StepContext) -> None:
    workflow = definition(ctx)
    events = [t["event"] for t in workflow["transitions"]]
    render_files(
        ctx,
        [("README.md", "workflows/README.md")],
        workflow=workflow,
        tool_id=str(ctx.tool.tool_id),
        updated_at=ctx.tool.updated_at,
        executions=await tools.count_records(ctx.pool, ctx.tool.tool_id),
        example_event=json.dumps({"event": events[0] if events else "next"}, ensure_ascii=False),
    )


def _pkg(names: Any) -> tuple[str, ...]:
    return tuple(f"pkg/{name}" for name in names)


STEPS = (
    Step(
        "validate",
        "Validating the workflow definition",
        validate,
        undo=remove(notes="validate"),
        retryable=False,
    ),
    Step(
        "engine",
        "Generating the workflow engine service",
        engine,
        undo=remove(*NODE_SCAFFOLD, *(t for t, _ in ENGINE)),
        outputs=_pkg((*NODE_SCAFFOLD, *(t for t, _ in ENGINE))),
    ),
    Step(
        "data",
        "Copying the definition and execution history",
        copy_data,
        undo=remove("data", notes="data"),
        outputs=("pkg/data/workflow.json", "pkg/data/executions.csv", "notes/data.json"),
    ),
    Step("schemas", "Generating JSON Schema files", schemas, undo=remove("schemas"), outputs=_pkg(SCHEMAS)),
    Step(
        "docker",
        "Creating the Docker configuration",
        docker,
        undo=remove(*(t for t, _ in DOCKER)),
        outputs=_pkg(t for t, _ in DOCKER),
    ),
    Step("readme", "Documenting the workflow", readme, undo=remove("README.md"), outputs=("pkg/README.md",)),
    archive_step(),
)

STRATEGIES = [Strategy(name="workflows-package", tool_type="workflows", format="package", steps=STEPS)]
