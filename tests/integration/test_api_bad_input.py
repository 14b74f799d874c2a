"""Every bad request gets its status and a stable error code, and writes nothing."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import asyncpg
import jwt
import pytest

from service.config import Settings
from tests.support.api import api_client, bearer
from tests.support.data import create_tool, create_user


async def _nothing_written(pool: asyncpg.Pool) -> None:
    assert await pool.fetchval("SELECT count(*) FROM export_jobs") == 0
    assert await pool.fetchval("SELECT count(*) FROM export_outbox") == 0
    assert await pool.fetchval("SELECT count(*) FROM export_job_events") == 0


@pytest.fixture
async def owner(pool: asyncpg.Pool) -> Any:
    user = await create_user(pool, ["exporter"])
    forms = await create_tool(pool, user, "forms")
    themes = await create_tool(pool, user, "themes", metadata={"colors": {}})
    return user, forms, themes


BODY_CASES = [
    ("malformed json", b'{"tool_id": ', "invalid_json"),
    ("not an object", b"[1, 2]", "invalid_request"),
    ("missing tool_id", b'{"format": "bundle"}', "missing_field"),
    ("extra field", b'{"tool_id": "TOOL", "format": "bundle", "color": "red"}', "unknown_field"),
    ("non-uuid tool_id", b'{"tool_id": "12", "format": "bundle"}', "invalid_request"),
    ("options not an object", b'{"tool_id": "TOOL", "format": "bundle", "options": 3}', "invalid_request"),
    ("format wrong type", b'{"tool_id": "TOOL", "format": 7}', "invalid_request"),
    ("unknown format", b'{"tool_id": "TOOL", "format": "docx"}', "unknown_format"),
    ("unknown option", b'{"tool_id": "TOOL", "format": "bundle", "options": {"x": 1}}', "invalid_options"),
]


@pytest.mark.parametrize(("case", "body", "code"), BODY_CASES, ids=[c[0] for c in BODY_CASES])
async def test_invalid_bodies_get_422_with_a_code(
    settings: Settings, pool: asyncpg.Pool, owner: Any, case: str, body: bytes, code: str
) -> None:
    user, forms, _ = owner
    async with api_client(settings, with_relay=False) as client:
        response = await client.post(
            "/v1/exports",
            content=body.replace(b"TOOL", str(forms).encode()),
            headers={**bearer(settings, user, ["exporter"]), "Content-Type": "application/json"},
        )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["message"]
    await _nothing_written(pool)


async def test_format_the_tool_type_does_not_support(
    settings: Settings, pool: asyncpg.Pool, owner: Any
) -> None:
    user, _, themes = owner
    async with api_client(settings, with_relay=False) as client:
        response = await client.post(
            "/v1/exports",
            json={"tool_id": str(themes), "format": "csv"},
            headers=bearer(settings, user, ["exporter"]),
        )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "unsupported_format"
    assert "themes" in response.json()["error"]["message"]
    await _nothing_written(pool)


async def test_unknown_and_foreign_tools_are_404(settings: Settings, pool: asyncpg.Pool, owner: Any) -> None:
    _, forms, _ = owner
    stranger = await create_user(pool, ["exporter"])
    async with api_client(settings, with_relay=False) as client:
        for tool in (uuid4(), forms):
            response = await client.post(
                "/v1/exports",
                json={"tool_id": str(tool), "format": "bundle"},
                headers=bearer(settings, stranger, ["exporter"]),
            )
            assert response.status_code == 404
            assert response.json()["error"]["code"] == "unknown_tool"
    await _nothing_written(pool)


def _token(secret: str, claims: dict[str, Any]) -> str:
    return jwt.encode(claims, secret, algorithm="HS256")


async def test_authentication_failures(settings: Settings, pool: asyncpg.Pool, owner: Any) -> None:
    user, forms, _ = owner
    body = {"tool_id": str(forms), "format": "bundle"}
    other_key = _token("another-secret-another-secret-another-secret", {"sub": str(user), "exp": 9999999999})
    expired = _token(settings.jwt_secret, {"sub": str(user), "roles": ["exporter"], "exp": 1})
    cases = [
        ({}, 401, "missing_token"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, 401, "invalid_token"),
        ({"Authorization": "Bearer not-a-jwt"}, 401, "invalid_token"),
        ({"Authorization": f"Bearer {other_key}"}, 401, "invalid_token"),
        ({"Authorization": f"Bearer {expired}"}, 401, "token_expired"),
        (bearer(settings, user, []), 403, "forbidden"),
    ]
    async with api_client(settings, with_relay=False) as client:
        for headers, status, code in cases:
            response = await client.post("/v1/exports", json=body, headers=headers)
            assert (response.status_code, response.json()["error"]["code"]) == (status, code), headers
    await _nothing_written(pool)


async def test_status_of_missing_foreign_and_malformed_ids(
    settings: Settings, pool: asyncpg.Pool, owner: Any
) -> None:
    user, forms, _ = owner
    stranger = await create_user(pool, ["exporter"])
    admin = await create_user(pool, ["admin"])
    async with api_client(settings, with_relay=False) as client:
        created = await client.post(
            "/v1/exports",
            json={"tool_id": str(forms), "format": "bundle"},
            headers=bearer(settings, user, ["exporter"]),
        )
        assert created.status_code == 202
        url = created.headers["Location"]
        foreign = await client.get(url, headers=bearer(settings, stranger, ["exporter"]))
        missing = await client.get(f"/v1/exports/{uuid4()}", headers=bearer(settings, stranger, ["exporter"]))
        assert foreign.status_code == missing.status_code == 404
        assert foreign.json()["error"]["code"] == missing.json()["error"]["code"] == "job_not_found"
        assert (await client.get(url, headers=bearer(settings, admin, ["admin"]))).status_code == 200
        assert (await client.get(url, headers=bearer(settings, user, ["exporter"]))).status_code == 200
        malformed = await client.get("/v1/exports/not-a-uuid", headers=bearer(settings, user, ["exporter"]))
        assert malformed.status_code == 422


async def test_accepted_job_and_message_are_written_together(
    settings: Settings, pool: asyncpg.Pool, owner: Any
) -> None:
    user, forms, _ = owner
    async with api_client(settings, with_relay=False) as client:
        created = await client.post(
            "/v1/exports",
            json={"tool_id": str(forms), "format": "bundle"},
            headers=bearer(settings, user, ["exporter"]),
        )
    job = created.json()
    assert created.status_code == 202 and job["status"] == "pending"
    row = await pool.fetchrow("SELECT body, message_id FROM export_outbox")
    assert row["message_id"] == job["job_id"]
    assert row["body"]["schema"] == "export.requested.v1"
    assert row["body"]["job_id"] == job["job_id"] and row["body"]["attempt"] == 1
