"""Quoting of tool-controlled text for each file type a package holds.

Each function returns a complete literal (quotes included) that its reader takes back as
exactly the input text, or as the input with line breaks folded where the target cannot
hold them (Dockerfile labels, Markdown inline text). Nothing returned can end the literal
early, start a new line of the target, or be expanded by the reader ($VAR, `…`, {{ }}).
"""

from __future__ import annotations

import json
import re
import shlex
import unicodedata
from collections.abc import Iterable

__all__ = [
    "IdentifierSet",
    "compose_str",
    "css_ident",
    "css_string",
    "docker_value",
    "json_value",
    "md_text",
    "one_line",
    "sh_quote",
    "slug",
    "sql_ident",
    "sql_literal",
    "ts_string",
    "yaml_str",
]

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>()#+\-.!|~&$])")


def _no_nul(value: str) -> str:
    # PostgreSQL text, shells and C-based readers all cut a string at NUL.
    if "\x00" in value:
        raise ValueError("text contains a NUL byte")
    return value


def one_line(value: str) -> str:
    """Control characters and line breaks folded to single spaces."""
    return re.sub(r"\s+", " ", _CONTROL.sub(" ", value)).strip()


def _yaml_char(ch: str) -> str:
    code = ord(ch)
    if ch in '"\\':
        return "\\" + ch
    if code < 0x20 or 0x7F <= code <= 0x9F or code in (0x2028, 0x2029, 0xFEFF):
        return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"
    if 0xD800 <= code <= 0xDFFF or code in (0xFFFE, 0xFFFF):
        return f"\\u{code:04x}"
    return ch


def yaml_str(value: str) -> str:
    """A YAML double-quoted scalar; non-BMP characters stay literal (YAML 1.1 readers
    do not join JSON-style surrogate pairs)."""
    return '"' + "".join(_yaml_char(c) for c in value) + '"'


def compose_str(value: str) -> str:
    """A YAML scalar for docker-compose.yml, where `$` starts an interpolation."""
    return yaml_str(value.replace("$", "$$"))


def json_value(value: object) -> str:
    """JSON text of any JSON-able value (no HTML escaping, unlike Jinja's tojson)."""
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def ts_string(value: str) -> str:
    """A TypeScript string literal; ASCII-only so no line terminator can appear raw."""
    return json.dumps(value, ensure_ascii=True)


def docker_value(value: str) -> str:
    """A double-quoted Dockerfile value (LABEL, ENV): one line, no variable expansion."""
    text = one_line(value)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$") + '"'


def sql_ident(value: str) -> str:
    """A quoted PostgreSQL identifier."""
    return '"' + _no_nul(value).replace('"', '""') + '"'


def sql_literal(value: str) -> str:
    """A PostgreSQL string literal on one line: a plain '…' literal, or an E'…' literal
    with escapes when the text holds control characters (a raw line break inside a literal
    is valid SQL, but editors and git line-ending rules rewrite it)."""
    if not _CONTROL.search(_no_nul(value)):
        return "'" + value.replace("'", "''") + "'"
    escaped = value.replace("\\", "\\\\").replace("'", "''")
    return "E'" + _CONTROL.sub(lambda m: f"\\u{ord(m.group()):04x}", escaped) + "'"


def sh_quote(value: str) -> str:
    """A POSIX shell word in single quotes: nothing inside is expanded."""
    return shlex.quote(_no_nul(value))


def md_text(value: str) -> str:
    """Inline Markdown text: one line, every character that could start markup escaped."""
    return _MD_SPECIAL.sub(r"\\\1", one_line(value))


def css_string(value: str) -> str:
    """A CSS double-quoted string."""
    out = []
    for ch in _no_nul(value):
        if ch in '"\\':
            out.append("\\" + ch)
        elif _CONTROL.match(ch):
            out.append(f"\\{ord(ch):x} ")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def css_ident(value: str) -> str:
    """A CSS identifier that reads back as `value` (the CSSOM `CSS.escape` rules)."""
    if not value:
        raise ValueError("empty CSS identifier")
    out = []
    for i, ch in enumerate(_no_nul(value)):
        code = ord(ch)
        if _CONTROL.match(ch) or (ch.isdigit() and ch.isascii() and (i == 0 or (i == 1 and value[0] == "-"))):
            out.append(f"\\{code:x} ")
        elif i == 0 and ch == "-" and len(value) == 1:
            out.append("\\-")
        elif code >= 0x80 or ch in "-_" or (ch.isascii() and ch.isalnum()):
            out.append(ch)
        else:
            out.append("\\" + ch)
    return "".join(out)


def _ascii_words(value: str) -> list[str]:
    # Accents dropped (é → e) so Latin names stay readable; other scripts drop out.
    decomposed = unicodedata.normalize("NFKD", value)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c)).lower()
    return re.findall(r"[a-z0-9]+", plain)


def slug(value: str, *, default: str = "tool", max_len: int = 60) -> str:
    """Lowercase words joined by `-`: file names, npm package names, CSS custom properties."""
    words = _ascii_words(value)
    text = "-".join(words)[:max_len].strip("-")
    return text or default


class IdentifierSet:
    """Safe, unique identifiers (`[a-z_][a-z0-9_]*`, at most `max_len` bytes) for arbitrary
    names, e.g. form field names turned into SQL columns and TypeScript properties."""

    def __init__(self, reserved: Iterable[str] = (), *, prefix: str = "field", max_len: int = 63) -> None:
        self._taken = {r.lower() for r in reserved}
        self._prefix = prefix
        self._max_len = max_len
        self._count = 0

    def add(self, name: str) -> str:
        self._count += 1
        base = "_".join(_ascii_words(name))[: self._max_len] or f"{self._prefix}_{self._count}"
        if base[0].isdigit():
            base = f"{self._prefix}_{base}"[: self._max_len]
        candidate, n = base, 1
        while candidate in self._taken:
            n += 1
            suffix = f"_{n}"
            candidate = base[: self._max_len - len(suffix)] + suffix
        self._taken.add(candidate)
        return candidate
