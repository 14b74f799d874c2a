"""The Jinja2 environment package templates are rendered with.

Undefined names fail loudly (StrictUndefined) and nothing is escaped implicitly: each
template quotes tool data with the filter for its target (`| yaml_str`, `| sql_literal`…).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import jinja2

from service.packaging import escape

__all__ = ["environment", "render", "render_to"]

FILTERS = {
    "yaml_str": escape.yaml_str,
    "compose_str": escape.compose_str,
    "json_value": escape.json_value,
    "ts_string": escape.ts_string,
    "docker_value": escape.docker_value,
    "sql_ident": escape.sql_ident,
    "sql_literal": escape.sql_literal,
    "sh_quote": escape.sh_quote,
    "md_text": escape.md_text,
    "css_string": escape.css_string,
    "css_ident": escape.css_ident,
    "slug": escape.slug,
    "one_line": escape.one_line,
}


@cache
def environment() -> jinja2.Environment:
    """One environment per process: templates are compiled once and cached."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("service", "templates"),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # noqa: S701 - no HTML here; every value is quoted per target by a filter
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(FILTERS)
    return env


def render(template: str, **context: Any) -> str:
    return environment().get_template(template).render(**context)


def render_to(target: Path, template: str, **context: Any) -> None:
    """Render `template` into `target`, creating parent directories."""
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render(template, **context), "utf-8")
