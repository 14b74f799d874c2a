"""The API app in-process (lifespan included) behind an httpx client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from uuid import UUID

import httpx

from service.api.app import create_app
from service.api.auth import issue_token
from service.config import Settings


@asynccontextmanager
async def api_client(settings: Settings, *, with_relay: bool = True) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, with_relay=with_relay)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            yield client


def bearer(settings: Settings, user_id: UUID, roles: list[str], ttl: int = 3600) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(settings.jwt_secret, user_id, roles, ttl)}"}
