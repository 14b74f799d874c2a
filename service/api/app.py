"""The FastAPI application: pools and broker opened in the lifespan, the relay alongside."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service import metrics
from service.api import errors, exports
from service.broker import Broker
from service.config import Settings
from service.db import create_pool
from service.monitor import monitor
from service.outbox import Relay
from service.storage import open_storage
from service.strategies import load_registry

__all__ = ["create_app"]

log = logging.getLogger(__name__)


def create_app(settings: Settings, *, with_relay: bool = True) -> FastAPI:
    """The API app; `with_relay` also publishes the outbox from this process."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.pool = await create_pool(settings, max_size=20)
        broker = Broker(settings)
        app.state.broker = broker
        stop = asyncio.Event()
        tasks: list[asyncio.Task[Any]] = []
        with contextlib.suppress(Exception):
            # Usually the broker is up: connect before serving. If it is down, the API
            # still accepts jobs into the outbox and the task below keeps trying.
            await broker.connect(timeout=3)
        tasks.append(asyncio.create_task(_connect_broker(broker, settings, stop, with_relay, app)))
        tasks.append(asyncio.create_task(monitor(settings, app.state.pool, broker, stop)))
        try:
            yield
        finally:
            stop.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await broker.close()
            await app.state.pool.close()

    app = FastAPI(
        title="Export service",
        version="1.0.0",
        description="Exports tools as packages, bundles and record files.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.registry = load_registry(settings.extra_strategy_modules)
    app.state.storage = open_storage(settings)
    errors.install(app)
    app.include_router(exports.router)

    @app.middleware("http")
    async def measure(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        began = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        metrics.HTTP_REQUESTS.labels(path, request.method, str(response.status_code)).inc()
        metrics.HTTP_DURATION.labels(path, request.method).observe(time.perf_counter() - began)
        return response

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"], responses={503: {"description": "a dependency is down"}})
    async def readyz(request: Request) -> JSONResponse:
        """Readiness: PostgreSQL answers and the broker connection is up."""
        checks = {"database": False, "broker": request.app.state.broker.is_connected}
        with contextlib.suppress(Exception):
            checks["database"] = await asyncio.wait_for(request.app.state.pool.fetchval("SELECT 1"), 2) == 1
        ready = all(checks.values())
        return JSONResponse(
            {"status": "ready" if ready else "not_ready", "checks": checks}, 200 if ready else 503
        )

    @app.get("/metrics", tags=["ops"], include_in_schema=False)
    async def metrics_endpoint() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app


async def _connect_broker(
    broker: Broker,
    settings: Settings,
    stop: asyncio.Event,
    with_relay: bool,
    app: FastAPI,
) -> None:
    """Connect in the background: the API accepts jobs into the outbox while the broker is down."""
    if not broker.is_connected:
        await broker.connect_until(stop, timeout=5)
    if with_relay and not stop.is_set():
        await Relay(settings, app.state.pool, broker).run(stop)
