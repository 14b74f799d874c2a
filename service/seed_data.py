"""Demo tools for `exporter seed`, the tests and the benchmarks, and the metadata contract
the package strategies read.

forms: `tool_metadata` =
    {"form_id": str, "title": str, "description": str,
     "fields": [{"name": str, "label": str, "type": FIELD_TYPE, "required": bool,
                 "options": [str, ...]  # select, radio, multiselect
                }, ...]}
  records: submissions, one dict per submission keyed by field name (values as JSON gives
  them: str, number, bool, list of str for multiselect, "YYYY-MM-DD" for dates).

workflows: `tool_metadata` =
    {"workflow_id": str, "title": str, "description": str, "initial_state": str,
     "states": [{"id": str, "label": str, "type": "start" | "task" | "end",
                 "description": str}, ...],
     "transitions": [{"from": str, "to": str, "event": str, "label": str}, ...]}
  records: executions {"execution_id": str, "status": "running" | "completed" | "failed"
  | "cancelled", "current_state": str, "started_at": ISO, "finished_at": ISO | None,
  "input": {...}, "history": [{"state": str, "event": str | None, "at": ISO}, ...]}.

themes: `tool_metadata` =
    {"theme_id": str, "title": str, "description": str,
     "colors": {name: "#rrggbb" | "rgb(…)" | "hsl(…)", ...},
     "typography": {"font_family": str, "fallback": [str, ...], "base_size": LENGTH,
                    "line_height": number, "scale": {name: LENGTH, ...},
                    "fonts": [{"family": str, "src": ASSET_PATH, "weight": int,
                               "style": "normal" | "italic"}, ...]},
     "spacing": {name: LENGTH, ...},
     "backgrounds": {name: ASSET_PATH, ...}}
  assets: fonts, images and backgrounds under relative paths (fonts/…, images/…, …).
"""

from __future__ import annotations

import json
import random
import struct
import zlib
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
from asyncpg.pool import PoolConnectionProxy

__all__ = [
    "FIELD_TYPES",
    "Asset",
    "ToolData",
    "demo_tools",
    "form_metadata",
    "form_submissions",
    "insert_tool",
    "png",
    "theme_assets",
    "theme_metadata",
    "workflow_executions",
    "workflow_metadata",
]

FIELD_TYPES = (
    "text", "textarea", "email", "url", "phone", "number", "checkbox",
    "select", "radio", "multiselect", "date", "file",
)  # fmt: skip

Asset = tuple[str, str, bytes]  # (relative path, content type, content)
EPOCH = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


@dataclass
class ToolData:
    """A tool to insert: registry row, records and assets."""

    tool_type: str
    name: str
    metadata: dict[str, Any]
    records: Iterable[Mapping[str, Any]] = ()
    assets: list[Asset] = field(default_factory=list)


def form_metadata(title: str = "Customer registration") -> dict[str, Any]:
    return {
        "form_id": "customer-registration",
        "title": title,
        "description": "New customers register for an account and the newsletter.",
        "fields": [
            {"name": "full_name", "label": "Full name", "type": "text", "required": True},
            {"name": "email", "label": "E-mail", "type": "email", "required": True},
            {"name": "age", "label": "Age", "type": "number", "required": False},
            {"name": "newsletter", "label": "Newsletter", "type": "checkbox", "required": False},
            {"name": "country", "label": "Country", "type": "select", "required": True,
             "options": ["FR", "RO", "DE", "US"]},
            {"name": "interests", "label": "Interests", "type": "multiselect", "required": False,
             "options": ["news", "offers", "events"]},
            {"name": "birthday", "label": "Birthday", "type": "date", "required": False},
            {"name": "comments", "label": "Comments", "type": "textarea", "required": False},
        ],
    }  # fmt: skip


def form_submissions(n: int, seed: int = 1) -> Iterator[dict[str, Any]]:
    """`n` submissions of the demo form, generated lazily and deterministically."""
    rng = random.Random(seed)  # noqa: S311 - demo data, deterministic on purpose
    names = ("Ana Pop", "Jean Dupont", "Zoë Müller", "Ion O'Neil", 'Sam "Q" Lee')
    for i in range(n):
        name = rng.choice(names)
        yield {
            "full_name": name,
            "email": f"user{i}@example.com",
            "age": rng.randint(18, 90),
            "newsletter": rng.random() < 0.5,
            "country": rng.choice(("FR", "RO", "DE", "US")),
            "interests": rng.sample(("news", "offers", "events"), rng.randint(0, 3)),
            "birthday": f"{rng.randint(1940, 2005)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
            "comments": rng.choice(("", "Great service,\nthanks!", "Tab\there; quote ' and \\")),
        }


def workflow_metadata(title: str = "Order approval") -> dict[str, Any]:
    states = [
        ("submitted", "Submitted", "start", "The customer placed an order."),
        ("review", "Under review", "task", "A manager checks the order."),
        ("approved", "Approved", "task", "The order is approved and awaits shipping."),
        ("shipped", "Shipped", "end", "The order left the warehouse."),
        ("rejected", "Rejected", "end", "The order was refused."),
    ]
    transitions = [
        ("submitted", "review", "assign", "Assign a reviewer"),
        ("review", "approved", "approve", "Approve"),
        ("review", "rejected", "reject", "Reject"),
        ("approved", "shipped", "ship", "Ship"),
    ]
    return {
        "workflow_id": "order-approval",
        "title": title,
        "description": "Orders above the limit need a manager's approval before shipping.",
        "initial_state": "submitted",
        "states": [{"id": s, "label": lbl, "type": t, "description": d} for s, lbl, t, d in states],
        "transitions": [{"from": a, "to": b, "event": e, "label": lbl} for a, b, e, lbl in transitions],
    }


def workflow_executions(n: int, seed: int = 2) -> Iterator[dict[str, Any]]:
    """`n` executions of the demo workflow walking its transitions."""
    rng = random.Random(seed)  # noqa: S311 - demo data, deterministic on purpose
    paths = (
        [("submitted", None)],
        [("submitted", None), ("review", "assign")],
        [("submitted", None), ("review", "assign"), ("rejected", "reject")],
        [("submitted", None), ("review", "assign"), ("approved", "approve"), ("shipped", "ship")],
    )
    for i in range(n):
        path = rng.choice(paths)
        start = EPOCH + timedelta(minutes=7 * i)
        history = [
            {"state": s, "event": e, "at": (start + timedelta(hours=k)).isoformat()}
            for k, (s, e) in enumerate(path)
        ]
        done = path[-1][0] in ("shipped", "rejected")
        yield {
            "execution_id": f"exec-{i:06d}",
            "status": "completed" if done else rng.choice(("running", "failed", "cancelled")),
            "current_state": path[-1][0],
            "started_at": history[0]["at"],
            "finished_at": history[-1]["at"] if done else None,
            "input": {"order_id": 10_000 + i, "amount": round(rng.uniform(10, 5000), 2)},
            "history": history,
        }


def theme_metadata(title: str = "Ocean") -> dict[str, Any]:
    return {
        "theme_id": "ocean",
        "title": title,
        "description": "Calm blues for dashboards.",
        "colors": {
            "primary": "#1a73e8",
            "secondary": "#34a853",
            "background": "#ffffff",
            "surface": "rgb(248, 249, 250)",
            "text": "#202124",
            "accent": "hsl(200, 80%, 45%)",
        },
        "typography": {
            "font_family": "Ocean Sans",
            "fallback": ["system-ui", "sans-serif"],
            "base_size": "16px",
            "line_height": 1.5,
            "scale": {"h1": "2.5rem", "h2": "2rem", "h3": "1.5rem", "body": "1rem", "small": "0.875rem"},
            "fonts": [
                {
                    "family": "Ocean Sans",
                    "src": "fonts/ocean-sans-regular.woff2",
                    "weight": 400,
                    "style": "normal",
                },
                {
                    "family": "Ocean Sans",
                    "src": "fonts/ocean-sans-bold.woff2",
                    "weight": 700,
                    "style": "normal",
                },
            ],
        },
        "spacing": {"xs": "4px", "sm": "8px", "md": "16px", "lg": "24px", "xl": "40px"},
        "backgrounds": {"hero": "backgrounds/waves.png"},
    }


def png(width: int = 1, height: int = 1, rgb: tuple[int, int, int] = (26, 115, 232)) -> bytes:
    """A valid, tiny PNG of one colour."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" + bytes(rgb) * width
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * height))
        + chunk(b"IEND", b"")
    )


def _font(name: str) -> bytes:
    # Not a real font, but with a WOFF2 signature: enough to exercise binary copying.
    rng = random.Random(name)  # noqa: S311 - demo data, deterministic on purpose
    return b"wOF2" + bytes(rng.randrange(256) for _ in range(512))


def theme_assets() -> list[Asset]:
    return [
        ("fonts/ocean-sans-regular.woff2", "font/woff2", _font("regular")),
        ("fonts/ocean-sans-bold.woff2", "font/woff2", _font("bold")),
        ("images/logo.png", "image/png", png(2, 2)),
        ("backgrounds/waves.png", "image/png", png(4, 4, (200, 230, 255))),
    ]


def demo_tools(records: int) -> list[ToolData]:
    """One tool of each type; `records` submissions and executions each."""
    return [
        ToolData("forms", "Customer registration", form_metadata(), form_submissions(records),
                 [("images/logo.png", "image/png", png(2, 2))]),
        ToolData("workflows", "Order approval", workflow_metadata(), workflow_executions(records)),
        ToolData("themes", "Ocean", theme_metadata(), (), theme_assets()),
    ]  # fmt: skip


INSERT_TOOL = """
INSERT INTO tool_registry (tool_name, tool_type, owner_id, tool_metadata)
VALUES ($1, $2, $3, $4::text::jsonb) RETURNING tool_id
"""
INSERT_ASSET = "INSERT INTO tool_assets (tool_id, path, content_type, content) VALUES ($1, $2, $3, $4)"
COPY_CHUNK = 2000


async def _copy_lines(tool_id: UUID, records: Iterable[Mapping[str, Any]]) -> AsyncIterator[bytes]:
    lines: list[str] = []
    for record in records:
        # COPY text format: only the backslash needs escaping, JSON escapes control chars.
        text = json.dumps(record, ensure_ascii=False).replace("\\", "\\\\")
        lines.append(f"{tool_id}\t{text}\n")
        if len(lines) >= COPY_CHUNK:
            yield "".join(lines).encode()
            lines = []
    if lines:
        yield "".join(lines).encode()


async def insert_tool(
    conn: asyncpg.Connection | PoolConnectionProxy,
    *,
    owner_id: UUID | None,
    tool: ToolData | None = None,
    tool_type: str = "",
    name: str = "",
    metadata: dict[str, Any] | None = None,
    records: Iterable[Mapping[str, Any]] = (),
    assets: Iterable[Asset] = (),
) -> UUID:
    """Insert a tool (a ToolData, or its fields as keywords) with its records and assets.

    Records go through COPY in text format: binary COPY has no jsonb encoder when the
    connection decodes JSON (service.db), and text works with or without that codec.
    """
    if tool is not None:
        tool_type, name, metadata = tool.tool_type, tool.name, tool.metadata
        records, assets = tool.records, tool.assets
    if not tool_type or metadata is None:
        raise ValueError("insert_tool needs a tool or tool_type, name and metadata")
    tool_id: UUID = await conn.fetchval(
        INSERT_TOOL, name, tool_type, owner_id, json.dumps(metadata, ensure_ascii=False)
    )
    await conn.copy_to_table(
        "tool_records", source=_copy_lines(tool_id, records), columns=["tool_id", "data"], format="text"
    )
    await conn.executemany(INSERT_ASSET, [(tool_id, p, ct, content) for p, ct, content in assets])
    return tool_id
