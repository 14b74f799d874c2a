"""Themes package pieces without a database: which values become CSS tokens."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any
from uuid import uuid4

import pytest

from service import seed_data
from service.steps import Tool
from service.strategies import themes


def ctx_for(metadata: dict[str, Any]) -> Any:
    return SimpleNamespace(tool=Tool(uuid4(), "Theme", "themes", metadata, None, "2026-01-01T00:00:00+00:00"))


def test_demo_theme_becomes_tokens() -> None:
    theme, notes = themes.plan(ctx_for(seed_data.theme_metadata()))
    assert notes == []
    assert {c["var"]: c["value"] for c in theme["colors"]}["--color-accent"] == "hsl(200, 80%, 45%)"
    assert [s["var"] for s in theme["spacing"]] == [
        "--space-xs",
        "--space-sm",
        "--space-md",
        "--space-lg",
        "--space-xl",
    ]
    assert theme["font_stack"] == '"Ocean Sans", system-ui, sans-serif'
    assert (theme["base_size"], theme["line_height"]) == ("16px", "1.5")


@pytest.mark.parametrize(
    "value", ["#12345", "red;}", "url(x)", "rgb(1,2,3);x", "expression(alert(1))", "", None, True, ["#fff"]]
)
def test_values_that_are_not_colours_are_noted_not_emitted(value: object) -> None:
    theme, notes = themes.plan(ctx_for({"colors": {"bad": value, "good": "#fff"}}))
    assert [c["name"] for c in theme["colors"]] == ["good"]
    assert [n["color"] for n in notes] == ["bad"]


def test_bad_typography_values_are_dropped() -> None:
    theme, notes = themes.plan(
        ctx_for({"colors": {"a": "red"}, "typography": {"base_size": "1;x", "line_height": "1.4"}})
    )
    assert theme["base_size"] is None and theme["line_height"] == "1.4"
    assert notes == [{"step": "css", "typography": "base_size", "skipped": "not a valid value: '1;x'"}]
