"""Downloads: a signed, expiring URL; streamed with Content-Length, Content-Disposition, ETag and
Range; 403 once expired, 410 once retention removed the package, a redirect for S3."""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import asyncpg

from service.config import Settings
from service.storage import LocalStorage
from tests.support.api import api_client, bearer
from tests.support.data import create_tool, create_user
from tests.support.exports import completed_job, insert_job

CONTENT = bytes(range(256)) * 40  # 10240 bytes
ETAG = f'"{hashlib.sha256(CONTENT).hexdigest()}"'


async def owner_and_job(
    settings: Settings, pool: asyncpg.Pool, name: str = "bundle.zip"
) -> tuple[dict[str, str], str]:
    user = await create_user(pool, ["exporter"])
    tool = await create_tool(pool, user)
    job_id = await completed_job(pool, settings, user, tool, name, CONTENT)
    return bearer(settings, user, ["exporter"]), str(job_id)


async def test_download_redirects_to_a_signed_url_that_streams_the_package(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    headers, job_id = await owner_and_job(settings, pool, 'naïve "export".zip')
    async with api_client(settings, with_relay=False) as client:
        status = (await client.get(f"/v1/exports/{job_id}", headers=headers)).json()
        link = await client.get(f"/v1/exports/{job_id}/download", headers=headers)
        assert link.status_code == 307
        assert link.json()["url"] == link.headers["location"]
        assert link.headers["location"].startswith(f"/v1/downloads/{job_id}?expires=")
        assert status["download_url"].startswith(f"/v1/downloads/{job_id}?expires=")
        got = await client.get(link.headers["location"])  # no token needed
    assert got.status_code == 200
    assert got.content == CONTENT
    assert got.headers["content-length"] == str(len(CONTENT))
    assert got.headers["content-type"] == "application/zip"
    assert got.headers["etag"] == ETAG
    assert got.headers["accept-ranges"] == "bytes"
    assert got.headers["content-disposition"] == (
        "attachment; filename=\"naive _export_.zip\"; filename*=UTF-8''na%C3%AFve%20%22export%22.zip"
    )


async def test_ranges_resume_a_download(settings: Settings, pool: asyncpg.Pool) -> None:
    headers, job_id = await owner_and_job(settings, pool)
    async with api_client(settings, with_relay=False) as client:
        url = (await client.get(f"/v1/exports/{job_id}/download", headers=headers)).headers["location"]
        head = await client.get(url, headers={"Range": "bytes=0-99"})
        tail = await client.get(url, headers={"Range": "bytes=100-"})
        suffix = await client.get(url, headers={"Range": "bytes=-10"})
        stale = await client.get(url, headers={"Range": "bytes=100-", "If-Range": '"another-version"'})
        fresh = await client.get(url, headers={"Range": "bytes=100-", "If-Range": ETAG})
        beyond = await client.get(url, headers={"Range": f"bytes={len(CONTENT)}-"})
        backwards = await client.get(url, headers={"Range": "bytes=50-10"})
        cached = await client.get(url, headers={"If-None-Match": ETAG})
    assert head.status_code == 206 and head.content == CONTENT[:100]
    assert head.headers["content-range"] == f"bytes 0-99/{len(CONTENT)}"
    assert head.headers["content-length"] == "100"
    assert tail.status_code == 206 and head.content + tail.content == CONTENT
    assert suffix.status_code == 206 and suffix.content == CONTENT[-10:]
    assert stale.status_code == 200 and stale.content == CONTENT  # changed since: whole package
    assert fresh.status_code == 206 and fresh.content == CONTENT[100:]
    for bad in (beyond, backwards):
        assert bad.status_code == 416
        assert bad.headers["content-range"] == f"bytes */{len(CONTENT)}"
        assert bad.json()["error"]["code"] == "range_not_satisfiable"
    assert cached.status_code == 304 and cached.content == b""


async def test_an_expired_link_is_403(settings: Settings, pool: asyncpg.Pool) -> None:
    settings = settings.model_copy(update={"download_url_ttl_seconds": 1})
    headers, job_id = await owner_and_job(settings, pool)
    async with api_client(settings, with_relay=False) as client:
        url = (await client.get(f"/v1/exports/{job_id}/download", headers=headers)).headers["location"]
        expires = int(parse_qs(urlsplit(url).query)["expires"][0])
        assert (await client.get(url)).status_code == 200
        await asyncio.sleep(max(0.0, expires - time.time()) + 0.1)
        late = await client.get(url)
    assert late.status_code == 403
    assert late.json()["error"]["code"] == "link_expired"


async def test_a_package_removed_by_retention_is_410(settings: Settings, pool: asyncpg.Pool) -> None:
    headers, job_id = await owner_and_job(settings, pool)
    headers2, job2 = await owner_and_job(settings, pool)
    async with api_client(settings, with_relay=False) as client:
        url = (await client.get(f"/v1/exports/{job_id}/download", headers=headers)).headers["location"]
        url2 = (await client.get(f"/v1/exports/{job2}/download", headers=headers2)).headers["location"]
        # Retention marked the first one expired, and the second one's object is simply gone.
        await pool.execute("UPDATE export_jobs SET package_expired_at = now() WHERE job_id = $1", job_id)
        storage = client._transport.app.state.storage  # type: ignore[attr-defined]
        assert isinstance(storage, LocalStorage)
        row = await pool.fetchrow("SELECT package_path FROM export_jobs WHERE job_id = $1", job2)
        storage.path(row["package_path"]).unlink()
        answers = [
            await client.get(url),
            await client.get(f"/v1/exports/{job_id}/download", headers=headers),
            await client.get(url2),
            await client.get(f"/v1/exports/{job2}/download", headers=headers2),
        ]
        status = (await client.get(f"/v1/exports/{job_id}", headers=headers)).json()
        # The whole job row deleted by retention: the link was ours, so the package existed.
        await pool.execute("DELETE FROM export_jobs WHERE job_id = $1", job2)
        answers.append(await client.get(url2))
    for response in answers:
        assert response.status_code == 410, response.text
        assert response.json()["error"]["code"] == "package_expired"
    assert status["package_expired"] is True and status["download_url"] is None


async def test_download_of_an_unfinished_job_is_409(settings: Settings, pool: asyncpg.Pool) -> None:
    user = await create_user(pool, ["exporter"])
    tool = await create_tool(pool, user)
    job_id = await insert_job(pool, user, tool, "in_progress")
    async with api_client(settings, with_relay=False) as client:
        response = await client.get(
            f"/v1/exports/{job_id}/download", headers=bearer(settings, user, ["exporter"])
        )
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "not_completed"


class PresigningStorage(LocalStorage):
    """Local files that also hand out presigned URLs, as S3 does."""

    async def presigned_url(self, key: str, filename: str, ttl_seconds: int) -> str | None:
        return f"https://bucket.s3.example.com/{key}?X-Amz-Expires={ttl_seconds}"


async def test_storage_with_presigned_urls_gets_a_redirect_there(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    headers, job_id = await owner_and_job(settings, pool)
    async with api_client(settings, with_relay=False) as client:
        app = client._transport.app  # type: ignore[attr-defined]
        ours = (await client.get(f"/v1/exports/{job_id}/download", headers=headers)).headers["location"]
        app.state.storage = PresigningStorage(app.state.storage.root)
        direct = await client.get(f"/v1/exports/{job_id}/download", headers=headers)
        via_ours = await client.get(ours)
    for response in (direct, via_ours):
        assert response.status_code == 307
        assert response.headers["location"].startswith(f"https://bucket.s3.example.com/{job_id}/bundle.zip")
    assert direct.json()["url"] == direct.headers["location"]


async def test_public_url_makes_links_absolute(settings: Settings, pool: asyncpg.Pool) -> None:
    settings = settings.model_copy(update={"public_url": "https://exports.example.com"})
    headers, job_id = await owner_and_job(settings, pool)
    async with api_client(settings, with_relay=False) as client:
        link = await client.get(f"/v1/exports/{job_id}/download", headers=headers)
    assert link.headers["location"].startswith(f"https://exports.example.com/v1/downloads/{job_id}?")
