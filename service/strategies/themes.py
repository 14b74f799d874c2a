"""Format `package` for themes: an npm package of CSS (custom properties for colours,
typography and spacing, base styles, utilities, @font-face), assets and docs.

Reads the themes metadata contract documented in service.seed_data. CSS values are
checked against the shapes they may take (colour, length, number); a value that fits none
is left out with a note rather than quoted, since a quoted colour is not a colour.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import PurePosixPath
from typing import Any

from service.packaging.escape import IdentifierSet, css_string, slug
from service.steps import Step, StepContext, Strategy
from service.strategies.package_common import (
    archive_step,
    copy_assets,
    pkg_root,
    remove,
    render_files,
    require,
    write_json,
    write_notes,
)

COLOR = re.compile(
    r"#(?:[0-9a-fA-F]{3,4}|[0-9a-fA-F]{6}|[0-9a-fA-F]{8})"
    r"|(?:rgba?|hsla?)\(\s*[0-9.%\s,/deg+-]+\)"
    r"|[a-zA-Z]{3,20}"
)
LENGTH = re.compile(r"0|-?\d+(?:\.\d+)?(?:px|rem|em|%|vh|vw|pt|ch|ex)")
NUMBER = re.compile(r"\d+(?:\.\d+)?")
GENERIC_FAMILIES = {
    "serif", "sans-serif", "monospace", "cursive", "fantasy", "system-ui",
    "ui-serif", "ui-sans-serif", "ui-monospace", "ui-rounded", "math", "emoji",
}  # fmt: skip
FONT_FORMATS = {".woff2": "woff2", ".woff": "woff", ".ttf": "truetype", ".otf": "opentype"}
FONT_STYLES = ("normal", "italic", "oblique")
CSS_FILES = ("src/variables.css", "src/theme.css")
ASSET_CSS = ("src/fonts.css", "src/backgrounds.css")
DOCS = ("docs/palette.md", "docs/typography.md")
NPM = ("package.json", "index.css", "README.md")


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _title(ctx: StepContext) -> str:
    title = ctx.tool.metadata.get("title")
    return title if isinstance(title, str) and title.strip() else ctx.tool.name


def _tokens(
    group: str, values: dict[str, Any], pattern: re.Pattern[str], notes: list[dict[str, str]], prefix: str
) -> list[dict[str, str]]:
    """Named values that fit `pattern`, each with a unique custom property and class name."""
    names = IdentifierSet(prefix=group)
    tokens = []
    for name, value in values.items():
        text = (
            str(value).strip() if isinstance(value, str | int | float) and not isinstance(value, bool) else ""
        )
        if not pattern.fullmatch(text):
            notes.append(
                {"step": "css", group: name, "skipped": f"not a valid {group} value: {str(value)[:80]!r}"}
            )
            continue
        cls = names.add(name).replace("_", "-")
        tokens.append({"name": name, "cls": cls, "var": f"--{prefix}-{cls}", "value": text})
    return tokens


def plan(ctx: StepContext) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """The theme's CSS tokens (only values of a valid shape) and notes on the rest."""
    meta = ctx.tool.metadata
    typo = _dict(meta.get("typography"))
    notes: list[dict[str, str]] = []
    colors = _tokens("color", _dict(meta.get("colors")), COLOR, notes, "color")
    scale = _tokens("size", _dict(typo.get("scale")), LENGTH, notes, "font-size")
    spacing = _tokens("spacing", _dict(meta.get("spacing")), LENGTH, notes, "space")
    family = typo.get("font_family")
    fallback = typo.get("fallback")
    fallback = fallback if isinstance(fallback, list) else []
    stack = [css_string(family)] if isinstance(family, str) and family.strip() else []
    stack += [f if f in GENERIC_FAMILIES else css_string(str(f)) for f in fallback]
    theme = {
        "colors": colors,
        "scale": scale,
        "spacing": spacing,
        "font_stack": ", ".join(stack),
        "base_size": _single("base_size", typo, (LENGTH,), notes),
        "line_height": _single("line_height", typo, (NUMBER, LENGTH), notes),
    }
    return theme, notes


def _single(
    key: str, values: dict[str, Any], patterns: tuple[re.Pattern[str], ...], notes: list[dict[str, str]]
) -> str | None:
    value = values.get(key)
    if value is None:
        return None
    text = str(value).strip() if isinstance(value, str | int | float) and not isinstance(value, bool) else ""
    if any(p.fullmatch(text) for p in patterns):
        return text
    notes.append({"step": "css", "typography": key, "skipped": f"not a valid value: {str(value)[:80]!r}"})
    return None


async def validate(ctx: StepContext) -> None:
    require(bool(ctx.tool.name.strip()), "the tool has no name")
    require(
        bool(_dict(ctx.tool.metadata.get("colors"))), "the theme has no colours (metadata.colors is empty)"
    )


async def css(ctx: StepContext) -> None:
    theme, notes = plan(ctx)
    render_files(ctx, [(name, f"themes/{name}") for name in CSS_FILES], theme=theme)
    write_notes(ctx, "css", notes)


def _fonts(entries: Iterable[Any], copied: set[str], notes: list[dict[str, str]]) -> list[dict[str, Any]]:
    fonts = []
    for entry in entries:
        font = _dict(entry)
        src, family = font.get("src"), font.get("family")
        suffix = PurePosixPath(src).suffix.lower() if isinstance(src, str) else ""
        if (
            not isinstance(src, str)
            or src not in copied
            or suffix not in FONT_FORMATS
            or not isinstance(family, str)
            or not family
        ):
            notes.append(
                {"step": "assets", "font": str(src)[:200], "skipped": "no such font file among the assets"}
            )
            continue
        weight = font.get("weight")
        fonts.append(
            {
                "family": family,
                "src": src,
                "format": FONT_FORMATS[suffix],
                "weight": weight if isinstance(weight, int) and 1 <= weight <= 1000 else 400,
                "style": font.get("style") if font.get("style") in FONT_STYLES else "normal",
            }
        )
    return fonts


def _backgrounds(ctx: StepContext, copied: set[str], notes: list[dict[str, str]]) -> list[dict[str, str]]:
    names = IdentifierSet(prefix="background")
    found = []
    for name, src in _dict(ctx.tool.metadata.get("backgrounds")).items():
        if not isinstance(src, str) or src not in copied:
            notes.append({"step": "assets", "background": name, "skipped": "no such image among the assets"})
            continue
        found.append({"name": name, "cls": names.add(name).replace("_", "-"), "src": src})
    return found


async def assets(ctx: StepContext) -> None:
    written, notes = await copy_assets(ctx, pkg_root(ctx) / "assets", "assets")
    copied = set(written)
    fonts = _fonts(_dict(ctx.tool.metadata.get("typography")).get("fonts") or [], copied, notes)
    backgrounds = _backgrounds(ctx, copied, notes)
    render_files(ctx, [(name, f"themes/{name}") for name in ASSET_CSS], fonts=fonts, backgrounds=backgrounds)
    write_notes(ctx, "assets", notes)


def _fonts_for_docs(ctx: StepContext) -> list[dict[str, Any]]:
    # The docs list what fonts.css declares: the fonts whose files made it into assets/.
    root = pkg_root(ctx) / "assets"
    copied = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    return _fonts(_dict(ctx.tool.metadata.get("typography")).get("fonts") or [], copied, [])


async def docs(ctx: StepContext) -> None:
    theme, _ = plan(ctx)
    render_files(
        ctx,
        [(name, f"themes/{name}") for name in DOCS],
        theme=theme,
        title=_title(ctx),
        fonts=_fonts_for_docs(ctx),
    )


async def npm_package(ctx: StepContext) -> None:
    name = slug(ctx.tool.name, default="theme")
    description = ctx.tool.metadata.get("description")
    write_json(
        pkg_root(ctx) / "package.json",
        {
            "name": name,
            "version": "1.0.0",
            "description": f"CSS theme {_title(ctx)}"[:200],
            "license": "UNLICENSED",
            "style": "index.css",
            "main": "index.css",
            "files": ["index.css", "src/", "assets/", "docs/"],
            "exports": {
                ".": "./index.css",
                "./variables.css": "./src/variables.css",
                "./package.json": "./package.json",
            },
            "keywords": ["theme", "css", "design-tokens"],
        },
    )
    render_files(
        ctx,
        [("index.css", "themes/index.css"), ("README.md", "themes/README.md")],
        title=_title(ctx),
        description=description if isinstance(description, str) else "",
        package_name=name,
        tool_id=str(ctx.tool.tool_id),
        updated_at=ctx.tool.updated_at,
    )


def _pkg(names: Iterable[str]) -> tuple[str, ...]:
    return tuple(f"pkg/{name}" for name in names)


STEPS = (
    Step("validate", "Validating the theme", validate, retryable=False),
    Step(
        "css",
        "Generating CSS custom properties",
        css,
        undo=remove(*CSS_FILES, notes="css"),
        outputs=(*_pkg(CSS_FILES), "notes/css.json"),
    ),
    Step(
        "assets",
        "Copying fonts, images and backgrounds",
        assets,
        undo=remove("assets", *ASSET_CSS, notes="assets"),
        outputs=(*_pkg(ASSET_CSS), "notes/assets.json"),
    ),
    Step("docs", "Documenting the palette and typography", docs, undo=remove("docs"), outputs=_pkg(DOCS)),
    Step("npm", "Creating the npm package structure", npm_package, undo=remove(*NPM), outputs=_pkg(NPM)),
    archive_step(),
)

STRATEGIES = [Strategy(name="themes-package", tool_type="themes", format="package", steps=STEPS)]
