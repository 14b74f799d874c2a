"""An in-process worker (the real consumer) for integration tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from service.config import Settings
from service.db import create_pool
from service.runner import connect_broker
from service.storage import open_storage
from service.strategies import load_registry
from service.worker.consumer import Worker


@asynccontextmanager
async def worker_running(settings: Settings) -> AsyncIterator[Worker]:
    stop = asyncio.Event()
    pool = await create_pool(settings)
    broker = await connect_broker(settings, stop)
    assert broker is not None
    worker = Worker(
        settings, pool, broker, open_storage(settings), load_registry(settings.extra_strategy_modules)
    )
    task = asyncio.create_task(worker.run(stop))
    try:
        yield worker
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await broker.close()
        await pool.close()
