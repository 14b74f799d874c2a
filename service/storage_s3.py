"""Packages in S3-compatible object storage (AWS S3, MinIO, R2, moto) through aiobotocore.

A package becomes visible only when its upload completes: small files go up in one PutObject,
larger ones as a multipart upload that is completed at the very end and aborted on any
failure or cancellation. Downloads are presigned GET URLs that name the file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import unicodedata
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote, urlparse

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from service.config import Settings
from service.errors import InvalidInput, PermanentError, TransientError
from service.storage import check_key

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_s3.type_defs import CompletedPartTypeDef, HeadObjectOutputTypeDef

__all__ = ["S3Storage", "content_disposition", "parse_s3_url"]

log = logging.getLogger(__name__)

MiB = 1024 * 1024
PART_SIZE = 8 * MiB  # S3 wants at least 5 MiB per part (but the last) and at most 10,000 parts
MAX_PARTS = 10_000
PART_CONCURRENCY = 4  # memory held by an upload is at most this many parts
STREAM_CHUNK = 1 * MiB
MAX_URL_TTL = 7 * 24 * 3600  # SigV4 presigned URLs cannot live longer
ABORT_TIMEOUT = 30.0
# Error codes S3 (and compatibles) use for "try again later", whatever the status says.
RETRYABLE_CODES = {"SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable", "Throttling"}


def parse_s3_url(url: str) -> tuple[str, str]:
    """(bucket, key prefix ending in '/' or empty) of `s3://bucket/prefix`."""
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise InvalidInput(f"storage URL {url!r} is not s3://BUCKET/PREFIX", code="invalid_storage_url")
    prefix = parsed.path.strip("/")
    return parsed.netloc, (check_key(prefix) + "/") if prefix else ""


def content_disposition(filename: str) -> str:
    """RFC 6266 attachment header: a quoted ASCII fallback plus the exact name as filename*.

    Control characters are dropped and everything outside a small ASCII set is replaced or
    percent-encoded, so a hostile name can neither break the quoting nor add header lines.
    """
    name = filename.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if unicodedata.category(c)[0] != "C")[:255].strip() or "download"
    fallback = "".join(c for c in unicodedata.normalize("NFKD", name) if not unicodedata.combining(c))
    fallback = re.sub(r"[^A-Za-z0-9._()+ -]", "_", fallback).strip(" .") or "download"
    if fallback == name:
        return f'attachment; filename="{fallback}"'
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


def _storage_error(exc: ClientError, action: str, obj: str) -> BaseException:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    message = f"S3 {action} {obj}: {code or status} {error.get('Message', '')}".strip()
    if code in {"NoSuchKey", "NotFound", "404"} or (status == 404 and code != "NoSuchBucket"):
        return FileNotFoundError(message)
    if status >= 500 or status == 429 or code in RETRYABLE_CODES:
        return TransientError(message, code="storage_unavailable")
    return PermanentError(message, code="storage_error")


@contextlib.contextmanager
def _mapped(action: str, obj: str) -> Iterator[None]:
    """Turn client failures into the service's errors: missing, transient or permanent."""
    try:
        yield
    except ClientError as exc:
        raise _storage_error(exc, action, obj) from exc
    except (BotoConnectionError, HTTPClientError, aiohttp.ClientError) as exc:
        raise TransientError(f"S3 {action} {obj}: {exc}", code="storage_unavailable") from exc
    except BotoCoreError as exc:  # no credentials, bad configuration: retrying cannot help
        raise PermanentError(f"S3 {action} {obj}: {exc}", code="storage_error") from exc


class S3Storage:
    """Packages as objects under `prefix` in one bucket."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        part_size: int = PART_SIZE,
        part_concurrency: int = PART_CONCURRENCY,
        session: AioSession | None = None,
    ) -> None:
        if part_size < 5 * MiB:
            raise ValueError("S3 parts must be at least 5 MiB")
        self.bucket = bucket
        self.prefix = prefix
        self.endpoint_url = endpoint_url or None
        self.region = region
        self.part_size = part_size
        self.part_concurrency = max(1, part_concurrency)
        self._credentials = (access_key_id, secret_access_key)
        self._session = session or get_session()
        self._config = AioConfig(
            signature_version="s3v4",
            # MinIO and most self-hosted servers only answer path-style requests.
            s3={"addressing_style": "path" if self.endpoint_url else "auto"},
            retries={"mode": "standard", "max_attempts": 3},
            connect_timeout=10,
            read_timeout=60,
            # Checksums only where S3 requires them: several S3-compatible servers reject
            # the CRC headers newer clients add by default.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> S3Storage:
        """Bucket and prefix from STORAGE_URL; region and credentials from the AWS variables."""
        bucket, prefix = parse_s3_url(settings.packages_url)
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None
        return cls(bucket, prefix, endpoint_url=settings.storage_endpoint_url or None, region=region)

    def object_key(self, key: str) -> str:
        return self.prefix + check_key(key)

    @contextlib.asynccontextmanager
    async def _client(self) -> AsyncIterator[S3Client]:
        # A client per operation: nothing to close at shutdown and nothing bound to a loop
        # that may be gone; credentials and the service model stay cached in the session.
        access_key, secret_key = self._credentials
        async with self._session.create_client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            config=self._config,
        ) as client:
            yield client

    async def put(self, key: str, source: Path, content_type: str) -> None:
        """Upload `source` as `key`; nothing is visible under `key` unless this returns."""
        obj = self.object_key(key)
        size = (await asyncio.to_thread(source.stat)).st_size
        async with self._client() as s3:
            if size <= self.part_size:
                body = await asyncio.to_thread(source.read_bytes)
                with _mapped("put", obj):
                    await s3.put_object(Bucket=self.bucket, Key=obj, Body=body, ContentType=content_type)
                return
            part_size = max(self.part_size, -(-size // MAX_PARTS))
            with _mapped("create upload", obj):
                created = await s3.create_multipart_upload(
                    Bucket=self.bucket, Key=obj, ContentType=content_type
                )
            upload_id = created["UploadId"]
            try:
                parts = await self._upload_parts(s3, obj, upload_id, source, size, part_size)
                with _mapped("complete upload", obj):
                    await s3.complete_multipart_upload(
                        Bucket=self.bucket, Key=obj, UploadId=upload_id, MultipartUpload={"Parts": parts}
                    )
            except BaseException:  # failure or cancellation alike: never leave parts behind
                await self._abort(s3, obj, upload_id)
                raise

    async def _upload_parts(
        self, s3: S3Client, obj: str, upload_id: str, source: Path, size: int, part_size: int
    ) -> list[CompletedPartTypeDef]:
        """Read the file part by part and send up to `part_concurrency` parts at once.

        Memory stays at `part_concurrency` parts: the next part is read only when one is sent.
        On any failure or cancellation the parts in flight are cancelled and awaited, so the
        caller's abort comes after the last of them.
        """

        async def send(number: int, data: bytes) -> CompletedPartTypeDef:
            with _mapped(f"upload part {number}", obj):
                sent = await s3.upload_part(
                    Bucket=self.bucket, Key=obj, UploadId=upload_id, PartNumber=number, Body=data
                )
            return {"PartNumber": number, "ETag": sent["ETag"]}

        tasks: list[asyncio.Task[CompletedPartTypeDef]] = []
        pending: set[asyncio.Task[CompletedPartTypeDef]] = set()
        read = 0
        try:
            with source.open("rb") as fh:
                while True:
                    while len(pending) >= self.part_concurrency:
                        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                        for task in done:
                            task.result()  # the first failed part ends the upload
                    data = await asyncio.to_thread(fh.read, part_size)
                    if not data:
                        break
                    read += len(data)
                    tasks.append(asyncio.create_task(send(len(tasks) + 1, data)))
                    pending.add(tasks[-1])
            if pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_EXCEPTION)
                for task in done:
                    task.result()
            parts = [task.result() for task in tasks]  # all sent by now
        finally:
            for task in tasks:
                task.cancel()  # no-op for the parts already sent
            await asyncio.gather(*tasks, return_exceptions=True)
        if read != size:  # the file changed under us: the package would be corrupt
            raise PermanentError(f"{source} changed during upload ({read} bytes read, {size} expected)")
        return parts

    async def _abort(self, s3: S3Client, obj: str, upload_id: str) -> None:
        try:
            async with asyncio.timeout(ABORT_TIMEOUT):
                await s3.abort_multipart_upload(Bucket=self.bucket, Key=obj, UploadId=upload_id)
        except Exception:
            # The original failure is what the caller must see; a bucket lifecycle rule
            # (AbortIncompleteMultipartUpload) reaps an upload that could not be aborted.
            log.warning("could not abort multipart upload", extra={"key": obj}, exc_info=True)

    async def delete(self, key: str) -> None:
        obj = self.object_key(key)
        async with self._client() as s3:
            with _mapped("delete", obj):
                await s3.delete_object(Bucket=self.bucket, Key=obj)

    async def _head(self, key: str) -> HeadObjectOutputTypeDef:
        # A missing key is a 404 only with s3:ListBucket granted; without it S3 answers 403.
        obj = self.object_key(key)
        async with self._client() as s3:
            with _mapped("head", obj):
                return await s3.head_object(Bucket=self.bucket, Key=obj)

    async def exists(self, key: str) -> bool:
        try:
            await self._head(key)
        except FileNotFoundError:
            return False
        return True

    async def size(self, key: str) -> int:
        return (await self._head(key))["ContentLength"]

    async def stream(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """Bytes of `key` from `start` to `end` inclusive, one ranged GET read in chunks."""
        obj = self.object_key(key)
        async with self._client() as s3:
            with _mapped("get", obj):
                if start or end is not None:
                    wanted = f"bytes={start}-{'' if end is None else end}"
                    got = await s3.get_object(Bucket=self.bucket, Key=obj, Range=wanted)
                else:  # no Range at all: `bytes=0-` is refused for an empty object
                    got = await s3.get_object(Bucket=self.bucket, Key=obj)
            async with got["Body"] as body:
                while True:
                    with _mapped("read", obj):
                        chunk = await body.read(STREAM_CHUNK)
                    if not chunk:
                        break
                    yield chunk

    async def presigned_url(self, key: str, filename: str, ttl_seconds: int) -> str | None:
        """A GET URL valid for `ttl_seconds` (1 s to 7 days) that downloads as `filename`."""
        obj = self.object_key(key)
        async with self._client() as s3:
            with _mapped("presign", obj):
                return await s3.generate_presigned_url(
                    "get_object",
                    Params={
                        "Bucket": self.bucket,
                        "Key": obj,
                        "ResponseContentDisposition": content_disposition(filename),
                    },
                    ExpiresIn=min(max(1, ttl_seconds), MAX_URL_TTL),
                )
