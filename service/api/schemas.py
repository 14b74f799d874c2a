"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["CreateExport", "ErrorBody", "JobOut", "job_out"]


class CreateExport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tool_id: UUID
    format: str = Field(min_length=1, max_length=32)
    options: dict[str, Any] = Field(default_factory=dict)


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


class JobOut(BaseModel):
    job_id: UUID
    tool_id: UUID
    user_id: UUID | None
    format: str
    options: dict[str, Any]
    status: str
    attempt: int
    steps_completed: int
    steps_total: int
    current_step: str | None
    progress_percentage: int
    error_code: str | None
    error_message: str | None
    package_size_bytes: int | None
    package_sha256: str | None
    package_expired: bool
    download_url: str | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    completed_at: datetime | None


def job_out(row: asyncpg.Record) -> JobOut:
    """The public view of a job row."""
    completed = row["status"] == "completed" and row["package_expired_at"] is None
    return JobOut(
        job_id=row["job_id"],
        tool_id=row["tool_id"],
        user_id=row["user_id"],
        format=row["format"],
        options=row["options"],
        status=row["status"],
        attempt=row["attempt"],
        steps_completed=row["steps_completed"],
        steps_total=row["steps_total"],
        current_step=row["current_step"],
        progress_percentage=row["progress_percentage"],
        error_code=row["error_code"],
        error_message=row["error_message"],
        package_size_bytes=row["package_size_bytes"],
        package_sha256=row["package_sha256"].strip() if row["package_sha256"] else None,
        package_expired=row["package_expired_at"] is not None,
        download_url=f"/v1/exports/{row['job_id']}/download" if completed else None,
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        started_at=row["started_at"],
        completed_at=row["completed_at"],
    )
