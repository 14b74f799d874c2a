"""The `export.requested.v1` message and the completion events, as published on RabbitMQ."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal
from uuid import UUID

import asyncpg
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from service.errors import InvalidInput
from service.strategies import FORMATS

__all__ = ["REQUESTED_SCHEMA", "ExportRequested", "Topology", "parse_request"]

REQUESTED_SCHEMA = "export.requested.v1"
REQUESTED_KEY = "export.requested"
# The request option holding the callback URL, and the event header saying one is set (no
# "x-" prefix: a headers exchange ignores those unless told otherwise).
CALLBACK_OPTION = "callback_url"
CALLBACK_HEADER = "export-callback"
EVENT_KEYS = ("export.completed", "export.failed", "export.cancelled")  # terminal events


class ExportRequested(BaseModel):
    """Body of an export request; other services may publish it directly."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    schema_: Literal["export.requested.v1"] = Field("export.requested.v1", alias="schema")
    job_id: UUID
    tool_id: UUID
    user_id: UUID
    format: str
    options: dict[str, Any] = Field(default_factory=dict)
    attempt: int = Field(1, ge=1)
    requested_at: datetime

    def body(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


def new_request(
    job_id: UUID, tool_id: UUID, user_id: UUID, fmt: str, options: dict[str, Any], attempt: int
) -> ExportRequested:
    return ExportRequested(
        job_id=job_id,
        tool_id=tool_id,
        user_id=user_id,
        format=fmt,
        options=options,
        attempt=attempt,
        requested_at=datetime.now(UTC),
    )


def parse_request(body: bytes) -> ExportRequested:
    """Parse and validate a delivered body; InvalidInput's code says why it was refused."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"body is not JSON: {exc}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise InvalidInput("body is not a JSON object", code="invalid_message")
    if data.get("schema") != REQUESTED_SCHEMA:
        raise InvalidInput(f"unknown schema {data.get('schema')!r}", code="unknown_schema")
    try:
        message = ExportRequested.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidInput(f"{where}: {first['msg']}", code="invalid_message") from None
    if message.format not in FORMATS:
        raise InvalidInput(f"unknown format {message.format!r}", code="unknown_format")
    return message


def job_event(row: asyncpg.Record | Mapping[str, Any]) -> tuple[str, str, dict[str, Any], dict[str, Any]]:
    """(routing key, message id, body, headers) of the event announcing a job's terminal status.

    The CALLBACK_HEADER header tells the callback sender whether the job asked for a callback,
    so events of jobs without one need no database lookup.
    """
    status = row["status"]
    kind = {"completed": "completed", "cancelled": "cancelled"}.get(status, "failed")
    body = {
        "schema": f"export.{kind}.v1",
        "job_id": str(row["job_id"]),
        "tool_id": str(row["tool_id"]),
        "user_id": str(row["user_id"]) if row["user_id"] else None,
        "format": row["format"],
        "status": status,
        "attempt": row["attempt"],
        "error_code": row["error_code"],
        "package_size_bytes": row["package_size_bytes"],
        "package_sha256": row["package_sha256"],
        # None while the row is still being written (jobs.COMPLETE fills it in).
        "finished_at": row["updated_at"].isoformat() if row["updated_at"] else None,
    }
    headers = {CALLBACK_HEADER: bool((row["options"] or {}).get(CALLBACK_OPTION))}
    return f"export.{kind}", f"{row['job_id']}:{row['attempt']}:{status}", body, headers


class Topology:
    """Exchange and queue names, all derived from EXPORTER_TOPOLOGY_PREFIX."""

    def __init__(self, prefix: str) -> None:
        self.exchange = prefix
        self.requests = f"{prefix}.requests"
        self.dead = f"{prefix}.dead"
        self.dlx = f"{prefix}.dlx"
        self.events = f"{prefix}.events"
        self.callbacks = f"{prefix}.callbacks"
        # A headers exchange between `events` and the callbacks queue: only events whose
        # CALLBACK_HEADER is true reach the queue, so jobs without a callback cost it nothing.
        self.callback_events = f"{prefix}.callback-events"
