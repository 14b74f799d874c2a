"""/openapi.json documents every endpoint, status and error body, and the running API keeps to it:
schemathesis generates requests for every operation against a real `exporter api` process and
checks that none gets a 5xx and every response matches its documented schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg
import httpx
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import not_a_server_error, response_schema_conformance

from service.api.auth import issue_token
from service.config import Settings
from tests.support.data import create_tool, create_user
from tests.support.exports import completed_job, insert_job
from tests.support.processes import running

EXAMPLES = 25
JOB_ROUTES = ("/v1/exports", "/v1/exports/{job_id}", "/v1/downloads/{job_id}")


def test_every_route_documents_its_errors_with_the_error_body() -> None:
    from service.api.app import create_app

    spec = create_app(Settings(jwt_secret="s" * 40)).openapi()
    operations = {(m.upper(), p): op for p, ops in spec["paths"].items() for m, op in ops.items()}
    assert {
        ("POST", "/v1/exports"),
        ("GET", "/v1/exports"),
        ("GET", "/v1/exports/{job_id}"),
        ("POST", "/v1/exports/{job_id}/cancel"),
        ("POST", "/v1/exports/{job_id}/retry"),
        ("GET", "/v1/exports/{job_id}/download"),
        ("GET", "/v1/exports/{job_id}/events"),
        ("GET", "/v1/downloads/{job_id}"),
    } <= set(operations)
    error_ref = "#/components/schemas/ErrorBody"
    for (method, path), op in operations.items():
        if not path.startswith("/v1/"):
            continue
        for status, response in op["responses"].items():
            if status.startswith(("4", "5")):
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": error_ref}, (method, path, status)
        assert "422" in op["responses"], (method, path)
        if path != "/v1/downloads/{job_id}":  # the signed URL is its own credential
            assert "401" in op["responses"], (method, path)
    assert "304" in operations["GET", "/v1/exports/{job_id}"]["responses"]
    assert "429" in operations["GET", "/v1/exports/{job_id}"]["responses"]
    assert {"206", "403", "410", "416"} <= set(operations["GET", "/v1/downloads/{job_id}"]["responses"])


async def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    user = await create_user(pool, ["exporter"])
    tool = await create_tool(pool, user)
    for status in ("pending", "in_progress", "failed", "cancelled"):
        await insert_job(pool, user, tool, status)
    await completed_job(pool, settings, user, tool, "bundle.zip", b"zip bytes" * 100)
    token = issue_token(settings.jwt_secret, user, ["exporter"])
    failures: list[str] = []
    with running(settings, tmp_path, workers=0, status_rate_limit=10_000) as (api, _):
        assert api is not None
        schema = schemathesis.openapi.from_url(f"{api.url}/openapi.json")
        # The event stream of an existing job stays open by design; ids are random here anyway.
        for result in schema.get_all_operations():
            operation = result.ok()
            if operation.path.startswith(("/healthz", "/readyz")):
                continue
            failures += run_operation(operation, api.url, token)
        # A real job through the documented paths, so 2xx bodies are checked too.
        with httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {token}"}) as client:
            listing = client.get("/v1/exports", params={"limit": 2})
            assert listing.status_code == 200 and listing.json()["next_cursor"]
    assert not failures, "\n\n".join(failures[:5])


def run_operation(operation: Any, base_url: str, token: str) -> list[str]:
    failures: list[str] = []

    @given(case=operation.as_strategy())
    @hypothesis_settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,  # the same cases every run: CI stays reproducible
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Any) -> None:
        case.call_and_validate(
            base_url=base_url,
            headers={"Authorization": f"Bearer {token}"},
            checks=[not_a_server_error, response_schema_conformance],
            timeout=10,
        )

    try:
        check()
    except Exception as exc:  # collect, so one run reports every operation's problems
        failures.append(f"{operation.method.upper()} {operation.path}: {exc}")
    return failures
