"""The worker's own small HTTP app: /metrics, /healthz and /readyz on EXPORTER_METRICS_PORT."""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.broker import Broker

__all__ = ["health_app"]


def health_app(pool: asyncpg.Pool, broker: Broker) -> FastAPI:
    app = FastAPI(title="Export worker", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        checks = {"database": False, "broker": broker.is_connected}
        with contextlib.suppress(Exception):
            checks["database"] = await asyncio.wait_for(pool.fetchval("SELECT 1"), 2) == 1
        ready = all(checks.values())
        return JSONResponse(
            {"status": "ready" if ready else "not_ready", "checks": checks}, 200 if ready else 503
        )

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app
