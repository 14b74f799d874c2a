"""Forms package pieces without a database: the column plan and the CSV cells."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any
from uuid import uuid4

import pytest

from service import seed_data
from service.steps import Tool
from service.strategies import forms, load_registry


def ctx_for(metadata: dict[str, Any]) -> Any:
    return SimpleNamespace(tool=Tool(uuid4(), "Form", "forms", metadata, None, "2026-01-01T00:00:00+00:00"))


def test_the_strategies_are_registered_with_the_seeds_step_counts() -> None:
    registry = load_registry()
    counts = {t: len(registry[(t, "package")].steps) for t in ("forms", "workflows", "themes")}
    assert counts == {"forms": 8, "workflows": 7, "themes": 6}
    for tool_type in counts:
        steps = registry[(tool_type, "package")].steps
        assert steps[0].name == "validate" and not steps[0].retryable
        assert steps[-1].name == "archive"
        assert len({s.name for s in steps}) == len(steps)


def test_each_field_gets_a_typed_column() -> None:
    columns, notes = forms.plan(ctx_for(seed_data.form_metadata()))
    assert notes == []
    assert [(c.column, c.sql_type) for c in columns] == [
        ("full_name", "text"), ("email", "text"), ("age", "numeric"), ("newsletter", "boolean"),
        ("country", "text"), ("interests", "jsonb"), ("birthday", "date"), ("comments", "text"),
    ]  # fmt: skip
    assert columns[4].options == ("FR", "RO", "DE", "US") and columns[0].required


def test_unknown_field_types_become_text_with_a_note() -> None:
    columns, notes = forms.plan(ctx_for({"fields": [{"name": "x", "type": "hologram"}, {"name": "Data"}]}))
    assert [(c.kind, c.column) for c in columns] == [("text", "x"), ("text", "data_2")]
    assert notes == [{"step": "validate", "field": "x", "note": "unknown type 'hologram' kept as text"}]


@pytest.mark.parametrize(
    ("kind", "value", "cell"),
    [
        ("number", 42, "42"), ("number", 1.5, "1.5"), ("number", " 7 ", "7"), ("number", "abc", None),
        ("number", True, None), ("number", float("nan"), None), ("number", None, None),
        ("checkbox", True, "true"), ("checkbox", "no", "false"), ("checkbox", "maybe", None),
        ("date", "2026-02-28", "2026-02-28"), ("date", "2026-02-30", None), ("date", "tomorrow", None),
        ("multiselect", ["a", "b"], '["a", "b"]'), ("multiselect", "a", '"a"'),
        ("text", "é\n'", "é\n'"), ("text", 12, "12"), ("text", False, "false"), ("text", {"a": 1}, '{"a": 1}'),
    ],
)  # fmt: skip
def test_answers_become_cells_of_their_column_type_or_null(
    kind: str, value: object, cell: str | None
) -> None:
    assert forms._cell(kind, value) == cell


def test_queries_name_every_column_quoted() -> None:
    columns, _ = forms.plan(ctx_for({"fields": [{"name": "select"}, {"name": "from"}]}))
    sql = forms._sql(columns)
    assert '"select", "from", data) VALUES ($1, $2, $3)' in sql["insert"]
    assert sql["copy"].startswith(
        'COPY "form_submissions" (submission_id, submitted_at, "select", "from", data)'
    )
