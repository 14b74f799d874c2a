"""Each quoting function, read back by the real reader of its target."""

from __future__ import annotations

import json
import re
import subprocess

import asyncpg
import jinja2
import pytest
import tinycss2
import yaml
from markdown_it import MarkdownIt

from service.packaging import escape
from service.packaging.render import environment

SAMPLES = [
    "plain",
    "",
    "quote ' double \" back \\ slash",
    "line\nbreak\r\nand\rcr",
    "$(id) `id` ${HOME} $HOME $$",
    "{{ 7*7 }} {% if x %}{% endif %} {# c #}",
    "tab\tvt\x0bff\x0cesc\x1bdel\x7fnel\x85",
    "Zoë 名前 😀 \u2028\u2029 \ufeff bidi\u202e",
    "-- */ /* <script>&amp;</script> | # * _ [a](b) ~ !",
    "x" * 3000,
]


@pytest.mark.parametrize("text", SAMPLES)
def test_yaml_scalars_read_back_exactly(text: str) -> None:
    assert yaml.safe_load(f"key: {escape.yaml_str(text)}\n") == {"key": text}
    assert yaml.safe_load(f"- {escape.compose_str(text)}\n") == [text.replace("$", "$$")]
    assert "\n" not in escape.yaml_str(text)


@pytest.mark.parametrize("text", SAMPLES)
def test_typescript_strings_are_one_ascii_line(text: str) -> None:
    literal = escape.ts_string(text)
    assert json.loads(literal) == text
    assert literal.isascii() and "\n" not in literal and "\r" not in literal


@pytest.mark.parametrize("text", SAMPLES)
def test_json_values_round_trip(text: str) -> None:
    assert json.loads(escape.json_value({"k": [text]})) == {"k": [text]}
    assert "&lt;" not in escape.json_value(text)  # unlike Jinja's tojson, no HTML escaping


@pytest.mark.parametrize("text", SAMPLES)
def test_dockerfile_values_are_one_line_without_expansion(text: str) -> None:
    value = escape.docker_value(text)
    assert "\n" not in value and "\r" not in value
    inner = value[1:-1]
    assert not re.search(r'(?<!\\)(?:\\\\)*["$]', inner)  # every " and $ is escaped
    assert re.sub(r"\\(.)", r"\1", inner) == escape.one_line(text)  # Docker's unescaping


@pytest.mark.parametrize("text", SAMPLES)
def test_shell_words_are_not_expanded(text: str) -> None:
    out = subprocess.run(["sh", "-c", f"printf %s {escape.sh_quote(text)}"], capture_output=True, timeout=10)
    assert out.returncode == 0 and out.stdout.decode() == text


@pytest.mark.parametrize("text", SAMPLES)
def test_markdown_text_renders_as_the_same_text(text: str) -> None:
    tokens = MarkdownIt("commonmark").parseInline(f"before {escape.md_text(text)} after")
    children = tokens[0].children or []
    assert {c.type for c in children} <= {"text", "text_special"}  # no emphasis, link, html, code
    rendered = "".join(c.content for c in children)
    assert rendered == f"before {escape.one_line(text)} after"


@pytest.mark.parametrize("text", [s for s in SAMPLES if s])
def test_css_strings_and_identifiers_read_back(text: str) -> None:
    (token,) = [
        t for t in tinycss2.parse_component_value_list(escape.css_string(text)) if t.type != "whitespace"
    ]
    assert token.type == "string" and token.value == text
    tokens = tinycss2.parse_component_value_list(f".{escape.css_ident(text)}")
    assert tokens[0] == "." and tokens[1].type == "ident" and tokens[1].value == text and len(tokens) == 2


@pytest.mark.parametrize("text", SAMPLES)
async def test_sql_literals_and_identifiers_read_back(pool: asyncpg.Pool, text: str) -> None:
    assert "\n" not in escape.sql_literal(text)
    assert await pool.fetchval(f"SELECT {escape.sql_literal(text)}::text") == text
    ident = text[:20] or "empty"  # PostgreSQL truncates identifiers to 63 bytes
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            f"CREATE TEMP TABLE {escape.sql_ident(ident)} ({escape.sql_ident(ident + 'c')} int)"
        )
        assert await conn.fetchval("SELECT relname FROM pg_class WHERE relname = $1", ident) == ident


def test_nul_bytes_are_refused_where_a_reader_would_cut_the_text() -> None:
    for quote in (escape.sql_literal, escape.sql_ident, escape.sh_quote, escape.css_string, escape.css_ident):
        with pytest.raises(ValueError, match="NUL"):
            quote("a\x00b")


def test_identifiers_are_safe_unique_and_stable() -> None:
    names = ["E-mail", "e mail", "Prénom", "名前", "1st", "data", "x" * 100, "x" * 100]

    def identifiers() -> list[str]:
        ids = escape.IdentifierSet(reserved=("data", "submission_id"))
        return [ids.add(n) for n in names]

    made = identifiers()
    assert identifiers() == made  # the same names always give the same columns
    assert all(re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", m) for m in made)
    assert len(set(made)) == len(made)
    assert made[:6] == ["e_mail", "e_mail_2", "prenom", "field_4", "field_1st", "data_2"]
    assert len(made[6]) == 63 and made[7] == made[6][:61] + "_2"


def test_slugs() -> None:
    assert escape.slug("Customer Registration (v2)!") == "customer-registration-v2"
    assert escape.slug("名前") == "tool" and escape.slug("名前", default="theme") == "theme"
    assert escape.slug("a" * 100) == "a" * 60


def test_environment_is_strict_and_does_not_html_escape() -> None:
    env = environment()
    with pytest.raises(jinja2.UndefinedError):
        env.from_string("{{ missing }}").render()
    assert env.from_string("{{ v }}").render(v="<&>") == "<&>"
    assert env.from_string("{{ v | sql_literal }}").render(v="it's") == "'it''s'"
