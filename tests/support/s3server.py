"""A local server speaking the S3 HTTP API (moto's, in a thread), for storage tests and e2e runs.

moto checks neither the signature nor the expiry of a presigned URL. The WSGI layer in front
of it refuses an expired presigned URL the way S3 and MinIO do (403 AccessDenied, "Request has
expired"), and lets a test intercept requests (fail or hold a part) to reach the error paths
over real HTTP. Other processes (workers, the API) reach it through `env()`.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from aiobotocore.session import get_session
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import BaseWSGIServer, make_server

from service.storage_s3 import S3Storage

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

__all__ = ["ACCESS_KEY", "REGION", "SECRET_KEY", "Interceptor", "S3Server", "error_xml", "running"]

ACCESS_KEY = "exporter-test"
SECRET_KEY = "exporter-test-secret"
REGION = "us-east-1"

Environ = dict[str, Any]
StartResponse = Callable[[str, list[tuple[str, str]]], Any]
# Sees each request (environ, with `query` parsed) and answers (status, body) to replace it, or None.
Interceptor = Callable[[Environ], "tuple[int, bytes] | None"]

REASONS = {400: "Bad Request", 403: "Forbidden", 500: "Internal Server Error", 503: "Service Unavailable"}


def error_xml(code: str, message: str) -> bytes:
    """An S3 error body, as clients parse it."""
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
        f"<Message>{message}</Message><RequestId>test</RequestId></Error>"
    ).encode()


def presigned_expiry(query: dict[str, list[str]]) -> datetime | None:
    """When a presigned URL stops being valid (SigV4 or SigV2 query auth), None if not presigned."""
    if "X-Amz-Date" in query and "X-Amz-Expires" in query:
        signed = datetime.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        return signed + timedelta(seconds=int(query["X-Amz-Expires"][0]))
    if "Signature" in query and "Expires" in query:
        return datetime.fromtimestamp(int(query["Expires"][0]), UTC)
    return None


class _Front:
    """WSGI layer in front of moto: presigned-URL expiry, then the test's interceptors."""

    def __init__(self, app: Callable[[Environ, StartResponse], Iterable[bytes]]) -> None:
        self.app = app
        self.interceptors: list[Interceptor] = []

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        query = parse_qs(environ.get("QUERY_STRING", ""))
        expires = presigned_expiry(query)
        if expires is not None and datetime.now(UTC) > expires:
            return self._answer(start_response, 403, error_xml("AccessDenied", "Request has expired"))
        environ["query"] = query
        for intercept in list(self.interceptors):
            answer = intercept(environ)
            if answer is not None:
                self._drain(environ)  # the client is still sending the part: read it first
                return self._answer(start_response, *answer)
        return self.app(environ, start_response)

    @staticmethod
    def _drain(environ: Environ) -> None:
        remaining = int(environ.get("CONTENT_LENGTH") or 0)
        while remaining > 0:
            chunk = environ["wsgi.input"].read(min(remaining, 1 << 20))
            if not chunk:
                break
            remaining -= len(chunk)

    @staticmethod
    def _answer(start_response: StartResponse, status: int, body: bytes) -> list[bytes]:
        headers = [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))]
        start_response(f"{status} {REASONS.get(status, 'Error')}", headers)
        return [body]


class S3Server:
    """moto's S3 on a free localhost port, in a daemon thread of this process."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._front = _Front(DomainDispatcherApplication(create_backend_app))
        self._server: BaseWSGIServer = make_server(
            host, 0, self._front, threaded=True, request_handler=MotoRequestHandler
        )
        self._thread = threading.Thread(target=self._server.serve_forever, name="s3-server", daemon=True)
        self.url = f"http://{host}:{self._server.server_port}"

    @property
    def interceptors(self) -> list[Interceptor]:
        return self._front.interceptors

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    @contextlib.asynccontextmanager
    async def client(self) -> AsyncIterator[S3Client]:
        """A plain S3 client on this server, for a test to look behind the backend's back."""
        async with get_session().create_client(
            "s3",
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        ) as client:
            yield client

    async def create_bucket(self) -> str:
        """A new bucket with a unique name, so tests never see each other's objects."""
        name = f"exports-{secrets.token_hex(6)}"
        async with self.client() as s3:
            await s3.create_bucket(Bucket=name)
        return name

    def storage(self, bucket: str, prefix: str = "", **options: Any) -> S3Storage:
        return S3Storage(
            bucket,
            prefix,
            endpoint_url=self.url,
            region=REGION,
            access_key_id=ACCESS_KEY,
            secret_access_key=SECRET_KEY,
            **options,
        )

    def env(self, bucket: str, prefix: str = "packages") -> dict[str, str]:
        """Variables that point `exporter api|worker|run` processes at this server."""
        return {
            "EXPORTER_STORAGE_URL": f"s3://{bucket}/{prefix}".rstrip("/"),
            "EXPORTER_STORAGE_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
        }


@contextlib.contextmanager
def running() -> Iterator[S3Server]:
    """Start a server for the duration of the block (a session fixture wraps this)."""
    server = S3Server()
    server.start()
    try:
        yield server
    finally:
        server.stop()
