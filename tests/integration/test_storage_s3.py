"""The S3 backend against a server speaking the S3 HTTP API on localhost (moto's).

Uploads of a large package go up in parts, and a failed or cancelled upload leaves neither an
object nor a pending multipart upload; presigned URLs download the exact bytes under the
package's name and stop working when they expire.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

import httpx
import pytest

from service.config import Settings
from service.errors import InvalidInput, PermanentError, TransientError
from service.storage import open_storage
from service.storage_s3 import MAX_URL_TTL, MiB, S3Storage, content_disposition, parse_s3_url
from tests.support import s3server
from tests.support.s3server import Environ, S3Server, error_xml

pytestmark = pytest.mark.timeout(120)

PACKAGE_SIZE = 50 * MiB
TAR = "application/gzip"


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Server]:
    with s3server.running() as server:
        yield server


@pytest.fixture
async def bucket(s3: S3Server) -> AsyncIterator[str]:
    yield await s3.create_bucket()
    s3.interceptors.clear()


@pytest.fixture
def storage(s3: S3Server, bucket: str) -> S3Storage:
    return s3.storage(bucket, "exports/")


@pytest.fixture(scope="session")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """50 MB of incompressible bytes: seven 8 MiB parts."""
    path = tmp_path_factory.mktemp("s3") / "package.tar.gz"
    with path.open("wb") as fh:
        for _ in range(PACKAGE_SIZE // MiB):
            fh.write(os.urandom(MiB))
    return path


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(MiB):
            digest.update(chunk)
    return digest.hexdigest()


async def pending_uploads(s3: S3Server, bucket: str) -> list[str]:
    async with s3.client() as client:
        listed = await client.list_multipart_uploads(Bucket=bucket)
    return [upload["Key"] for upload in listed.get("Uploads", [])]


async def object_keys(s3: S3Server, bucket: str) -> list[str]:
    async with s3.client() as client:
        listed = await client.list_objects_v2(Bucket=bucket)
    return [item["Key"] for item in listed.get("Contents", [])]


def part_request(environ: Environ, number: int) -> bool:
    query: dict[str, list[str]] = environ["query"]
    return environ["REQUEST_METHOD"] == "PUT" and query.get("partNumber") == [str(number)]


# -- upload and download ----------------------------------------------------------------


async def test_large_package_goes_up_in_parts_and_downloads_byte_identical(
    s3: S3Server, bucket: str, storage: S3Storage, package: Path
) -> None:
    parts: list[str] = []

    def count(environ: Environ) -> None:
        if environ["REQUEST_METHOD"] == "PUT" and "partNumber" in environ["query"]:
            parts.append(environ["query"]["partNumber"][0])

    s3.interceptors.append(count)
    await storage.put("job-1/package.tar.gz", package, TAR)

    assert sorted(parts, key=int) == [str(n) for n in range(1, 8)]  # 50 MB in 8 MiB parts
    async with s3.client() as client:
        head = await client.head_object(Bucket=bucket, Key="exports/job-1/package.tar.gz")
    assert head["ETag"].strip('"').endswith("-7")  # S3 marks a multipart object's ETag this way
    assert head["ContentType"] == TAR
    assert await pending_uploads(s3, bucket) == []
    assert await storage.exists("job-1/package.tar.gz")
    assert await storage.size("job-1/package.tar.gz") == PACKAGE_SIZE

    url = await storage.presigned_url("job-1/package.tar.gz", "forms-export.tar.gz", 300)
    assert url is not None
    assert parse_qs(urlparse(url).query)["X-Amz-Expires"] == ["300"]
    digest = hashlib.sha256()
    async with httpx.AsyncClient(timeout=60) as http, http.stream("GET", url) as response:
        assert response.status_code == 200
        assert response.headers["content-disposition"] == 'attachment; filename="forms-export.tar.gz"'
        async for chunk in response.aiter_bytes():
            digest.update(chunk)
    assert digest.hexdigest() == sha256(package)


async def test_parts_in_flight_are_bounded(
    s3: S3Server, bucket: str, storage: S3Storage, package: Path
) -> None:
    arrived: list[str] = []
    release = threading.Event()

    def hold_every_part(environ: Environ) -> None:
        if environ["REQUEST_METHOD"] == "PUT" and "partNumber" in environ["query"]:
            arrived.append(environ["query"]["partNumber"][0])
            release.wait(30)

    s3.interceptors.append(hold_every_part)
    upload = asyncio.create_task(storage.put("job-1b/package.tar.gz", package, TAR))
    try:
        for _ in range(200):
            if len(arrived) >= storage.part_concurrency:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # time for a fifth part to show up, if one were sent
        assert sorted(arrived) == ["1", "2", "3", "4"]  # memory holds at most four 8 MiB parts
    finally:
        release.set()
    await upload
    assert await storage.size("job-1b/package.tar.gz") == PACKAGE_SIZE


async def test_small_package_is_one_put(
    s3: S3Server, bucket: str, storage: S3Storage, tmp_path: Path
) -> None:
    source = tmp_path / "small.zip"
    source.write_bytes(b"PK" + os.urandom(1000))
    await storage.put("job-2/small.zip", source, "application/zip")
    async with s3.client() as client:
        head = await client.head_object(Bucket=bucket, Key="exports/job-2/small.zip")
    assert "-" not in head["ETag"]
    assert head["ContentLength"] == 1002
    assert [chunk async for chunk in storage.stream("job-2/small.zip")] == [source.read_bytes()]


async def test_presigned_url_names_hostile_and_non_ascii_files_safely(
    storage: S3Storage, tmp_path: Path
) -> None:
    source = tmp_path / "p.zip"
    source.write_bytes(b"data")
    await storage.put("job-3/p.zip", source, "application/zip")
    hostile = 'Rapport été "final"\r\nX-Injected: yes\r\n\r\n.zip'
    url = await storage.presigned_url("job-3/p.zip", hostile, 60)
    assert url is not None
    async with httpx.AsyncClient() as http:
        response = await http.get(url)
    assert response.status_code == 200
    assert "x-injected" not in response.headers
    header = response.headers["content-disposition"]
    assert header == content_disposition(hostile)
    assert header.startswith('attachment; filename="Rapport ete _final_X-Injected_ yes.zip"; filename*=')
    assert unquote(header.split("filename*=UTF-8''", 1)[1]) == 'Rapport été "final"X-Injected: yes.zip'


async def test_presigned_url_expires(s3: S3Server, storage: S3Storage, tmp_path: Path) -> None:
    # moto itself serves expired URLs; the test server refuses them as S3 does, so this checks
    # that the URL carries the TTL asked for and stops working when it has passed.
    source = tmp_path / "p.zip"
    source.write_bytes(b"data")
    await storage.put("job-4/p.zip", source, "application/zip")
    url = await storage.presigned_url("job-4/p.zip", "p.zip", 2)
    assert url is not None
    async with httpx.AsyncClient() as http:
        assert (await http.get(url)).content == b"data"
        await asyncio.sleep(3.2)
        expired = await http.get(url)
    assert expired.status_code == 403
    assert b"Request has expired" in expired.content


async def test_presigned_ttl_is_clamped_to_what_sigv4_allows(storage: S3Storage) -> None:
    for asked, expected in ((10**9, MAX_URL_TTL), (0, 1)):
        url = await storage.presigned_url("job-5/p.zip", "p.zip", asked)
        assert url is not None
        assert parse_qs(urlparse(url).query)["X-Amz-Expires"] == [str(expected)]


# -- nothing partial ever becomes visible -------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "raised"),
    [(500, "InternalError", TransientError), (403, "AccessDenied", PermanentError)],
)
async def test_failed_part_aborts_the_upload(
    s3: S3Server,
    bucket: str,
    storage: S3Storage,
    package: Path,
    status: int,
    code: str,
    raised: type[Exception],
) -> None:
    def fail_third_part(environ: Environ) -> tuple[int, bytes] | None:
        return (status, error_xml(code, "injected")) if part_request(environ, 3) else None

    s3.interceptors.append(fail_third_part)
    with pytest.raises(raised, match=code):
        await storage.put("job-6/package.tar.gz", package, TAR)
    assert not await storage.exists("job-6/package.tar.gz")
    assert await pending_uploads(s3, bucket) == []
    assert await object_keys(s3, bucket) == []


async def test_cancelled_upload_is_aborted(
    s3: S3Server, bucket: str, storage: S3Storage, package: Path
) -> None:
    reached, release = threading.Event(), threading.Event()

    def hold_second_part(environ: Environ) -> tuple[int, bytes] | None:
        if not part_request(environ, 2):
            return None
        reached.set()
        release.wait(30)
        return 500, error_xml("InternalError", "released after the test")

    s3.interceptors.append(hold_second_part)
    upload = asyncio.create_task(storage.put("job-7/package.tar.gz", package, TAR))
    try:
        assert await asyncio.to_thread(reached.wait, 30), "part 2 never reached the server"
        assert await pending_uploads(s3, bucket) == ["exports/job-7/package.tar.gz"]
        upload.cancel()
        with pytest.raises(asyncio.CancelledError):
            await upload
    finally:
        release.set()
    assert await pending_uploads(s3, bucket) == []
    assert await object_keys(s3, bucket) == []


async def test_source_changing_mid_upload_fails_and_aborts(
    s3: S3Server, bucket: str, storage: S3Storage, package: Path, tmp_path: Path
) -> None:
    source = tmp_path / "shrinking.tar.gz"
    source.write_bytes(package.read_bytes())

    def truncate_on_first_part(environ: Environ) -> None:
        if part_request(environ, 1):
            with source.open("r+b") as fh:
                fh.truncate(10 * MiB)

    s3.interceptors.append(truncate_on_first_part)
    with pytest.raises(PermanentError, match="changed during upload"):
        await storage.put("job-8/package.tar.gz", source, TAR)
    assert await pending_uploads(s3, bucket) == []
    assert await object_keys(s3, bucket) == []


# -- delete, exists, size, streams, keys --------------------------------------------------


async def test_delete_exists_and_size(storage: S3Storage, tmp_path: Path) -> None:
    source = tmp_path / "p.zip"
    source.write_bytes(b"x" * 12345)
    await storage.put("job-9/p.zip", source, "application/zip")
    assert await storage.exists("job-9/p.zip")
    assert await storage.size("job-9/p.zip") == 12345

    await storage.delete("job-9/p.zip")
    assert not await storage.exists("job-9/p.zip")
    await storage.delete("job-9/p.zip")  # a missing key is not an error
    with pytest.raises(FileNotFoundError):
        await storage.size("job-9/p.zip")
    with pytest.raises(FileNotFoundError):
        [chunk async for chunk in storage.stream("job-9/p.zip")]


async def test_ranged_streams(storage: S3Storage, tmp_path: Path) -> None:
    data = os.urandom(3 * MiB + 17)
    source = tmp_path / "p.bin"
    source.write_bytes(data)
    await storage.put("job-10/p.bin", source, "application/octet-stream")

    async def read(start: int = 0, end: int | None = None) -> bytes:
        chunks = [chunk async for chunk in storage.stream("job-10/p.bin", start, end)]
        assert all(len(chunk) <= MiB for chunk in chunks)
        return b"".join(chunks)

    assert await read() == data
    assert await read(0, 0) == data[:1]
    assert await read(100, 199) == data[100:200]
    assert await read(2 * MiB) == data[2 * MiB :]
    assert await read(len(data) - 1, len(data) - 1) == data[-1:]


async def test_keys_are_checked_and_prefixed(
    s3: S3Server, bucket: str, storage: S3Storage, tmp_path: Path
) -> None:
    source = tmp_path / "p.zip"
    source.write_bytes(b"data")
    for bad in ("../escape.zip", "/abs.zip", "a/../../b.zip", ""):
        with pytest.raises(InvalidInput):
            await storage.put(bad, source, "application/zip")
    await storage.put("job-11/p.zip", source, "application/zip")
    assert await object_keys(s3, bucket) == ["exports/job-11/p.zip"]


# -- configuration and failures of the store itself -----------------------------------------


async def test_open_storage_builds_the_s3_backend_from_settings(
    s3: S3Server, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in s3.env(bucket).items():
        if name.startswith("AWS_"):
            monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_REGION")  # the older variable alone is enough
    settings = Settings(storage_url=f"s3://{bucket}/some/prefix/", storage_endpoint_url=s3.url)
    backend = open_storage(settings)
    assert isinstance(backend, S3Storage)
    assert (backend.bucket, backend.prefix, backend.endpoint_url) == (bucket, "some/prefix/", s3.url)
    assert backend.region == s3server.REGION

    source = tmp_path / "p.zip"
    source.write_bytes(b"data")
    await backend.put("job-12/p.zip", source, "application/zip")  # credentials from the environment
    assert await object_keys(s3, bucket) == ["some/prefix/job-12/p.zip"]


def test_s3_urls_parse_into_bucket_and_prefix() -> None:
    assert parse_s3_url("s3://bucket") == ("bucket", "")
    assert parse_s3_url("s3://bucket/") == ("bucket", "")
    assert parse_s3_url("s3://bucket/a/b/") == ("bucket", "a/b/")
    for bad in ("s3:///prefix", "file:///tmp", "s3://bucket/../x"):
        with pytest.raises(InvalidInput):
            parse_s3_url(bad)


async def test_missing_bucket_is_a_permanent_error(s3: S3Server, tmp_path: Path) -> None:
    storage = s3.storage("no-such-bucket-here")
    source = tmp_path / "p.zip"
    source.write_bytes(b"data")
    with pytest.raises(PermanentError, match="NoSuchBucket"):
        await storage.put("job-13/p.zip", source, "application/zip")


async def test_unreachable_store_is_a_transient_error(unused_tcp_port: int) -> None:
    storage = S3Storage(
        "bucket",
        endpoint_url=f"http://127.0.0.1:{unused_tcp_port}",
        region="us-east-1",
        access_key_id="x",
        secret_access_key="y",
    )
    with pytest.raises(TransientError):
        await storage.exists("job-14/p.zip")


# -- Content-Disposition ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("forms-export.tar.gz", 'attachment; filename="forms-export.tar.gz"'),
        ("été.zip", "attachment; filename=\"ete.zip\"; filename*=UTF-8''%C3%A9t%C3%A9.zip"),
        ('dir\\a"b.zip', "attachment; filename=\"a_b.zip\"; filename*=UTF-8''a%22b.zip"),
        (
            "x\r\nSet-Cookie: a=b.zip",
            "attachment; filename=\"xSet-Cookie_ a_b.zip\"; filename*=UTF-8''xSet-Cookie%3A%20a%3Db.zip",
        ),
        ("表.pdf", "attachment; filename=\"_.pdf\"; filename*=UTF-8''%E8%A1%A8.pdf"),
        ("\x00\x7f", 'attachment; filename="download"'),
    ],
)
def test_content_disposition_is_rfc6266_and_cannot_inject(filename: str, expected: str) -> None:
    header = content_disposition(filename)
    assert header == expected
    assert header.isascii()
    assert not any(ord(c) < 0x20 or ord(c) == 0x7F for c in header)
