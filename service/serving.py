"""Serving an ASGI app under uvicorn inside our own event loop and signal handling."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Generator
from typing import Any

import uvicorn

__all__ = ["serve"]


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # The process entry point owns SIGTERM/SIGINT and stops every component together.
        yield


async def serve(app: Any, host: str, port: int, stop: asyncio.Event) -> None:
    """Serve `app` until `stop` is set, then finish in-flight requests and return."""
    config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False, lifespan="on")
    server = _Server(config)

    async def watch() -> None:
        await stop.wait()
        server.should_exit = True

    watcher = asyncio.create_task(watch())
    try:
        await server.serve()
    finally:
        watcher.cancel()
    if not server.started and not stop.is_set():
        raise RuntimeError(f"could not serve on {host}:{port}")
