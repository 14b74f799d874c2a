"""The step contract: what a strategy is made of and what a step may use while it runs."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    import asyncpg

    from service.config import Settings
    from service.storage import Storage

__all__ = ["NoOptions", "Package", "Step", "StepContext", "StepFn", "Strategy", "Tool"]


class NoOptions(BaseModel):
    """Options model of strategies that take none: anything given is refused."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class Tool:
    tool_id: UUID
    name: str
    type: str
    metadata: dict[str, Any]
    owner_id: UUID | None
    updated_at: str  # ISO 8601; the data version, used where archives need a fixed time


@dataclass(frozen=True)
class Package:
    """A finished package, already in storage under `key`."""

    key: str
    filename: str
    content_type: str
    size: int
    sha256: str


@dataclass
class StepContext:
    """Everything a step may touch. Steps talk to each other through files in `workdir`."""

    job_id: UUID
    user_id: UUID | None
    attempt: int
    format: str
    options: BaseModel
    tool: Tool
    strategy: str
    # Where the job's files go; created on first use of `workdir`, so a strategy that keeps
    # no files costs no directory.
    work_path: Path
    pool: asyncpg.Pool
    settings: Settings
    storage: Storage
    # Set by the orchestrator: fraction (0..1) of the running step done, for live progress.
    report: Callable[[float], None] = lambda fraction: None
    # Set when the job is being cancelled; threads doing CPU work poll it to stop early.
    cancelled: threading.Event = field(default_factory=threading.Event)
    # The final step sets this; the orchestrator records it with the completion.
    package: Package | None = None

    _work_made: bool = field(default=False, repr=False)

    @property
    def workdir(self) -> Path:
        """The job's working directory (created on first use); steps share files through it."""
        if not self._work_made:
            self.work_path.mkdir(parents=True, exist_ok=True)
            self._work_made = True
        return self.work_path

    def check_cancelled(self) -> None:
        """Raise CancelledError inside worker threads once the job is being cancelled."""
        if self.cancelled.is_set():
            raise asyncio.CancelledError

    async def in_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run CPU-heavy work off the event loop."""
        return await asyncio.to_thread(fn, *args)


StepFn = Callable[[StepContext], Awaitable[None]]


async def _nothing(ctx: StepContext) -> None:
    return None


@dataclass(frozen=True)
class Step:
    """One unit of an export, run in order, undone in reverse order on failure or cancel.

    `outputs` names files (relative to the workdir) the step produces; on resume after a
    crash a completed step is skipped only when all of them still exist.
    """

    name: str
    description: str
    run: StepFn
    undo: StepFn = _nothing
    timeout: float | None = None  # None: EXPORTER_STEP_TIMEOUT_SECONDS
    retryable: bool = True
    outputs: tuple[str, ...] = ()


@dataclass(frozen=True)
class Strategy:
    """An ordered list of steps for one (tool type, format), with the options it accepts."""

    name: str
    tool_type: str
    format: str
    steps: Sequence[Step]
    options: type[BaseModel] = NoOptions
