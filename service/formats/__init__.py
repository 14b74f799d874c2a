"""File writers for record exports (CSV, XLSX, PDF), and the pipe that feeds them.

Writers are plain functions: rows in (an iterable of row batches), a file out, constant
memory, no database. They are CPU-bound, so exports run them in a thread that `write_in_thread`
feeds from an async source through a bounded queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import threading
from collections.abc import AsyncIterable, Callable, Iterable, Iterator, Sequence
from datetime import date, datetime
from typing import Any, TypeVar

__all__ = ["Batches", "Cell", "Row", "display", "json_text", "write_in_thread"]

# A cell as writers receive it: a JSON value (arrays and objects are written as JSON text)
# or a date; aware datetimes are already in the export's time zone.
Cell = str | int | float | bool | datetime | date | list[Any] | dict[str, Any] | None
Row = Sequence[Cell]
Batches = Iterable[Sequence[Row]]

T = TypeVar("T")
R = TypeVar("R")
_DONE = object()


def display(value: Cell) -> str:
    """A cell as text for people: what CSV and PDF show."""
    if value is None:
        return ""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, list | dict):
        return json_text(value)
    return str(value)


# One encoder for every call: json.dumps with options builds a new encoder each time (4x slower).
json_text: Callable[[object], str] = json.JSONEncoder(ensure_ascii=False).encode
"""Nested JSON as text, non-ASCII kept as it is."""


async def write_in_thread(
    write: Callable[[Iterator[T]], R],
    source: AsyncIterable[T],
    *,
    depth: int = 2,
    cancelled: threading.Event | None = None,
) -> R:
    """Run `write(items)` in a thread while this task pulls items from `source`.

    At most `depth` items wait between the two, so memory stays bounded whatever the speed of
    either side, and reading the next batch overlaps with writing the last one. When this task
    is cancelled or `cancelled` is set, the writer stops at its next item and is waited for, so
    no thread is still writing the file when the caller cleans up.
    """
    loop = asyncio.get_running_loop()
    items: queue.SimpleQueue[object] = queue.SimpleQueue()
    slots = asyncio.Semaphore(depth)
    stop = threading.Event()

    def consume() -> Iterator[T]:
        while True:
            item = items.get()
            loop.call_soon_threadsafe(slots.release)
            if stop.is_set() or (cancelled is not None and cancelled.is_set()):
                raise asyncio.CancelledError
            if item is _DONE:
                return
            yield item  # type: ignore[misc]

    writer = asyncio.ensure_future(asyncio.to_thread(write, consume()))
    try:
        async for item in source:
            await _slot(slots, writer)
            items.put(item)
        await _slot(slots, writer)
        items.put(_DONE)
        return await writer
    except BaseException:
        stop.set()
        items.put(_DONE)  # wakes a writer blocked on an empty queue
        await asyncio.wait({writer})
        with contextlib.suppress(BaseException):
            writer.result()  # retrieved: its error is a consequence of ours
        raise


async def _slot(slots: asyncio.Semaphore, writer: asyncio.Future[Any]) -> None:
    """Wait for room in the queue, or fail as soon as the writer has ended."""
    if not slots.locked():
        await slots.acquire()
        return
    acquire = asyncio.ensure_future(slots.acquire())
    try:
        await asyncio.wait((acquire, writer), return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not acquire.done():
            acquire.cancel()
    if not acquire.done() or acquire.cancelled():
        writer.result()  # raises the writer's error
        raise RuntimeError("the writer stopped before its input ended")
