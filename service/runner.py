"""Process entry points: api, worker, relay and the all-in-one `run`, with signal handling."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
from typing import Any

from service import callbacks
from service.broker import Broker
from service.config import Settings
from service.db import create_pool
from service.monitor import monitor
from service.outbox import Relay
from service.serving import serve
from service.storage import open_storage
from service.strategies import load_registry

__all__ = ["run_all", "run_api", "run_relay", "run_worker"]

log = logging.getLogger(__name__)


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


async def connect_broker(settings: Settings, stop: asyncio.Event) -> Broker | None:
    """Connect, retrying while the broker is down; None if stopped first."""
    broker = Broker(settings)
    return broker if await broker.connect_until(stop) else None


async def run_api(settings: Settings, *, with_relay: bool = True) -> None:
    from service.api.app import create_app

    settings.require_secret()
    stop = asyncio.Event()
    _stop_on_signals(stop)
    log.info("api listening", extra={"host": settings.http_host, "port": settings.http_port})
    await serve(create_app(settings, with_relay=with_relay), settings.http_host, settings.http_port, stop)


async def run_relay(settings: Settings) -> None:
    stop = asyncio.Event()
    _stop_on_signals(stop)
    pool = await create_pool(settings, max_size=4)
    try:
        broker = await connect_broker(settings, stop)
        if broker is not None:
            await Relay(settings, pool, broker).run(stop)
            await broker.close()
    finally:
        await pool.close()


async def run_worker(settings: Settings) -> None:
    from service.worker.consumer import Worker
    from service.worker.health import health_app

    stop = asyncio.Event()
    _stop_on_signals(stop)
    registry = load_registry(settings.extra_strategy_modules)
    pool = await create_pool(settings, max_size=settings.worker_concurrency * 2 + 4)
    tasks: list[asyncio.Task[Any]] = []
    broker = None
    try:
        broker = await connect_broker(settings, stop)
        if broker is None:
            return
        worker = Worker(settings, pool, broker, open_storage(settings), registry)
        tasks.append(
            asyncio.create_task(
                serve(health_app(pool, broker), settings.http_host, settings.metrics_port, stop)
            )
        )
        tasks.append(asyncio.create_task(monitor(settings, pool, broker, stop, database=False)))
        tasks.append(asyncio.create_task(callbacks.run_sender(settings, pool, broker, stop)))
        if settings.cleanup_interval_seconds > 0:
            tasks.append(asyncio.create_task(_periodic_cleanup(settings, pool, stop)))
        await worker.run(stop)
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        if broker is not None:
            await broker.close()
        await pool.close()
        log.info("worker stopped")


async def _periodic_cleanup(settings: Settings, pool: Any, stop: asyncio.Event) -> None:
    """Retention from inside a worker, every EXPORTER_CLEANUP_INTERVAL_SECONDS (0: off)."""
    from service.cleanup import cleanup

    storage = open_storage(settings)
    while not stop.is_set():
        try:
            removed = await cleanup(pool, storage, settings.retention_days, settings.package_ttl_days)
            log.info("cleanup done", extra={"packages": removed.packages, "jobs": removed.jobs})
        except Exception:
            log.exception("cleanup failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), settings.cleanup_interval_seconds)


def run_all(settings: Settings, workers: int) -> int:
    """API + relay in one process and N worker processes; Ctrl-C stops them all."""
    settings.require_secret()
    env = dict(os.environ)
    children = []
    for i in range(workers):
        child_env = {**env, "EXPORTER_METRICS_PORT": str(settings.metrics_port + i)}
        children.append(subprocess.Popen([sys.executable, "-m", "service.cli", "worker"], env=child_env))
    try:
        asyncio.run(run_api(settings))
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(settings.shutdown_grace_seconds + 5)
            except subprocess.TimeoutExpired:
                child.kill()
    return 0
