"""Workflows package pieces without a database: the definition, schemas and CSV rows."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any
from uuid import uuid4

import jsonschema
import pytest

from service import seed_data
from service.steps import Tool
from service.strategies import workflows


def ctx_for(metadata: dict[str, Any]) -> Any:
    return SimpleNamespace(
        tool=Tool(uuid4(), "Flow", "workflows", metadata, None, "2026-01-01T00:00:00+00:00")
    )


def test_definition_fills_every_key_the_engine_reads() -> None:
    ctx = ctx_for({"states": [{"id": "a", "type": "weird"}, {"id": "b", "type": "end"}], "transitions": [{"from": "a", "to": "b", "event": "go"}]})  # fmt: skip
    workflow = workflows.definition(ctx)
    assert workflow["initial_state"] == "a" and workflow["title"] == "Flow"
    assert workflow["states"][0] == {"id": "a", "label": "a", "type": "task", "description": ""}
    assert workflow["transitions"] == [{"from": "a", "to": "b", "event": "go", "label": "go"}]
    schemas = workflows.json_schemas(workflow)
    jsonschema.validate(workflow, schemas["schemas/workflow.schema.json"])


def test_schemas_enumerate_the_states() -> None:
    workflow = workflows.definition(ctx_for(seed_data.workflow_metadata()))
    execution = workflows.json_schemas(workflow)["schemas/execution.schema.json"]
    record = next(seed_data.workflow_executions(1))
    jsonschema.validate(record, execution)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**record, "current_state": "limbo"}, execution)


def test_execution_rows_tolerate_odd_records() -> None:
    created = datetime(2026, 1, 1, tzinfo=UTC)
    odd = {
        "record_id": 9,
        "created_at": created,
        "data": json.dumps({"started_at": "yesterday", "history": "x"}),
    }
    row = workflows._execution_row(odd)  # type: ignore[arg-type]
    assert row == [9, None, "unknown", None, None, None, "{}", "[]", created.isoformat()]
    scalar = {"record_id": 10, "created_at": created, "data": "42"}
    assert workflows._execution_row(scalar)[2] == "unknown"  # type: ignore[arg-type]
