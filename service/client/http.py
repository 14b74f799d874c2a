"""The HTTP side of the client: retries with backoff, and API errors turned into exit codes."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx

__all__ = ["EXIT", "ApiClient", "ApiError", "error_of", "exit_code_for"]

# Exit codes, one per kind of outcome a script may want to branch on (see `exporter submit -h`).
EXIT = {
    "ok": 0,
    "job_failed": 1,
    "usage": 2,
    "unauthenticated": 3,
    "forbidden": 4,
    "not_found": 5,
    "conflict": 6,
    "gone": 7,
    "rate_limited": 8,
    "server_error": 9,
    "network": 10,
    "verification": 11,
    "timeout": 12,
}
BY_STATUS = {400: "usage", 401: "unauthenticated", 403: "forbidden", 404: "not_found", 409: "conflict"}
BY_STATUS |= {410: "gone", 422: "usage", 429: "rate_limited"}
HINTS = {
    401: "check EXPORTER_TOKEN / --token (`exporter token EMAIL` prints one)",
    403: "your token's roles do not allow this, or the link is no longer valid",
    429: "slow down: the API limits status requests per user",
}
RETRY_STATUSES = frozenset({429, 502, 503, 504})
MAX_WAIT = 30.0


def exit_code_for(status: int | None) -> int:
    if status is None:
        return EXIT["network"]
    if status >= 500:
        return EXIT["server_error"]
    return EXIT[BY_STATUS.get(status, "server_error")]


@dataclass
class ApiError(Exception):
    """A request that did not succeed; `exit_code` is what the command exits with."""

    status: int | None
    code: str
    message: str
    exit: int | None = None  # when the status alone doesn't say it (timeouts, checksums)

    @property
    def exit_code(self) -> int:
        return self.exit if self.exit is not None else exit_code_for(self.status)

    def __str__(self) -> str:
        where = f"HTTP {self.status}" if self.status else self.code
        hint = HINTS.get(self.status or 0)
        return f"{self.message} ({where}, {self.code})" + (f"; {hint}" if hint else "")


def error_of(response: httpx.Response) -> ApiError:
    try:
        body = response.json()["error"]
        return ApiError(response.status_code, str(body["code"]), str(body["message"]))
    except (ValueError, KeyError, TypeError):
        text = response.reason_phrase or "unexpected answer"
        return ApiError(response.status_code, "http_error", text)


def _retry_after(response: httpx.Response | None, fallback: float) -> float:
    if response is not None:
        try:
            return min(MAX_WAIT, max(0.0, float(response.headers.get("retry-after", ""))))
        except ValueError:
            pass
    return fallback


class ApiClient:
    """One connection pool to the API, with the bearer token and a retry policy."""

    def __init__(
        self,
        base_url: str,
        token: str | None,
        *,
        retries: int = 5,
        backoff: float = 0.5,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"), headers=headers, timeout=timeout, transport=transport
        )
        self.retries = retries
        self.backoff = backoff

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()

    def delay(self, attempt: int) -> float:
        base: float = self.backoff * 2**attempt
        return min(MAX_WAIT, base + random.uniform(0, self.backoff))  # noqa: S311 - jitter only

    async def request(
        self,
        method: str,
        url: str,
        *,
        ok: tuple[int, ...] = (200,),
        idempotent: bool = True,
        **kwargs: Any,
    ) -> httpx.Response:
        """Send with retries: network errors (only connection failures for non-idempotent
        requests, which may have been processed), 429 and 502-504, honouring Retry-After."""
        attempt = 0
        while True:
            response: httpx.Response | None = None
            try:
                response = await self.http.request(method, url, **kwargs)
            except httpx.TransportError as exc:
                safe = idempotent or isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
                if not safe or attempt >= self.retries:
                    raise ApiError(None, "network_error", f"cannot reach the API: {exc!r}") from None
            else:
                if response.status_code in ok:
                    return response
                if response.status_code not in RETRY_STATUSES or attempt >= self.retries:
                    raise error_of(response)
            await asyncio.sleep(_retry_after(response, self.delay(attempt)))
            attempt += 1

    @asynccontextmanager
    async def stream(self, url: str, headers: dict[str, str] | None = None) -> AsyncIterator[httpx.Response]:
        """A streamed GET; the caller checks the status (206 and 416 matter to resuming)."""
        async with self.http.stream("GET", url, headers=headers or {}) as response:
            yield response

    # -- the API, one method per endpoint ----------------------------------------------

    async def submit(
        self, tool_id: str, fmt: str, options: dict[str, Any], key: str | None = None
    ) -> dict[str, Any]:
        # The Idempotency-Key makes resending after a lost answer safe: same job, not a second.
        headers = {"Idempotency-Key": key or str(uuid.uuid4())}
        body = {"tool_id": tool_id, "format": fmt, "options": options}
        response = await self.request("POST", "/v1/exports", json=body, headers=headers, ok=(202,))
        return dict(response.json())

    async def status(
        self, job_id: str, etag: str | None = None
    ) -> tuple[dict[str, Any] | None, httpx.Response]:
        """(the job, or None when unchanged since `etag`), and the response for its headers."""
        headers = {"If-None-Match": etag} if etag else {}
        response = await self.request("GET", f"/v1/exports/{job_id}", headers=headers, ok=(200, 304))
        return (None if response.status_code == 304 else dict(response.json())), response

    async def cancel(self, job_id: str) -> dict[str, Any]:
        response = await self.request("POST", f"/v1/exports/{job_id}/cancel", ok=(202,), idempotent=False)
        return dict(response.json())

    async def retry(self, job_id: str) -> dict[str, Any]:
        response = await self.request("POST", f"/v1/exports/{job_id}/retry", ok=(202,), idempotent=False)
        return dict(response.json())

    async def download_url(self, job_id: str) -> str:
        response = await self.request("GET", f"/v1/exports/{job_id}/download", ok=(307,))
        return str(response.headers["location"])
