"""Downloads through signed, expiring URLs, streamed with Range, ETag and a safe filename.

`GET /v1/exports/{id}/download` (bearer token, owner or admin) answers 307 with a URL that
works without a token until it expires: the storage's own presigned URL (S3), or ours,
`/v1/downloads/{id}?expires=…&user=…&sig=…`, signed with HMAC-SHA256 over job id, expiry
and user under a key derived from EXPORTER_JWT_SECRET.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import time
import unicodedata
from datetime import UTC, datetime
from typing import Annotated
from urllib.parse import quote
from uuid import UUID

import asyncpg
from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse, StreamingResponse
from pydantic import BaseModel

from service import jobs
from service.api.auth import Principal
from service.api.deps import PoolDep, PrincipalDep, SettingsDep, StorageDep, errors, visible_job
from service.api.errors import error_response
from service.api.polling import etag_matches
from service.api.schemas import JobOut, job_out
from service.config import Settings
from service.errors import Conflict, Forbidden, Gone
from service.storage import Storage

__all__ = ["DownloadLink", "public_job", "router", "sign", "signed_url", "verify"]

router = APIRouter(tags=["downloads"])

SIGNED_PATH = "/v1/downloads/{job_id}"
IS_ADMIN = "SELECT 'admin' = ANY(roles) FROM users WHERE user_id = $1"
CONTENT_TYPES = {
    ".zip": "application/zip",
    ".tar.gz": "application/gzip",
    ".tgz": "application/gzip",
    ".csv": "text/csv; charset=utf-8",
    ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ".pdf": "application/pdf",
}


class DownloadLink(BaseModel):
    """Where to fetch the package, without a token, until `expires_at`."""

    url: str
    expires_at: datetime


# -- signing --------------------------------------------------------------------------------


def _key(secret: str) -> bytes:
    # A label of its own: a download signature can never stand in for a token or a callback.
    return hmac.new(secret.encode(), b"exporter/download-url/v1", hashlib.sha256).digest()


def sign(secret: str, job_id: UUID, user_id: UUID, expires: int) -> str:
    message = f"{job_id}\n{user_id}\n{expires}".encode()
    return hmac.new(_key(secret), message, hashlib.sha256).hexdigest()


def verify(secret: str, job_id: UUID, user_id: UUID, expires: int, sig: str, now: float) -> None:
    """Forbidden unless `sig` is ours for exactly these values and `expires` is still ahead."""
    # Bytes, not str: compare_digest refuses non-ASCII strings, and `sig` is whatever was sent.
    if not hmac.compare_digest(sign(secret, job_id, user_id, expires).encode(), sig.encode(errors="replace")):
        raise Forbidden("the download link is not valid", code="invalid_signature")
    if expires <= now:
        raise Forbidden("the download link has expired; ask for a new one", code="link_expired")


def expiry(ttl: int, now: float) -> int:
    """Now + ttl, rounded up to a step, so a status body (and its ETag) stays stable a while."""
    step = max(1, min(60, ttl // 10))
    return math.ceil((now + ttl) / step) * step


def signed_url(settings: Settings, job_id: UUID, user_id: UUID, now: float | None = None) -> tuple[str, int]:
    """(our signed URL for the job's package, its expiry as a Unix time)."""
    expires = expiry(settings.download_url_ttl_seconds, time.time() if now is None else now)
    sig = sign(settings.jwt_secret, job_id, user_id, expires)
    path = SIGNED_PATH.format(job_id=job_id) + f"?expires={expires}&user={user_id}&sig={sig}"
    return settings.public_url.rstrip("/") + path, expires


def public_job(row: asyncpg.Record, settings: Settings, principal: Principal) -> JobOut:
    """The job as the API shows it: a completed job's download_url is a signed, expiring link."""
    out = job_out(row)
    if out.download_url is not None:
        url, _ = signed_url(settings, row["job_id"], principal.user_id)
        out = out.model_copy(update={"download_url": url})
    return out


# -- the package ----------------------------------------------------------------------------


def filename_of(key: str) -> str:
    return key.rsplit("/", 1)[-1]


def content_type(filename: str) -> str:
    lowered = filename.lower()
    for suffix, kind in CONTENT_TYPES.items():
        if lowered.endswith(suffix):
            return kind
    return "application/octet-stream"


def content_disposition(filename: str) -> str:
    """RFC 6266: an ASCII fallback that cannot break the header, and the exact name in UTF-8."""
    ascii_name = unicodedata.normalize("NFKD", filename).encode("ascii", "ignore").decode()
    ascii_name = re.sub(r"[^A-Za-z0-9._ -]", "_", ascii_name).strip(" .") or "download"
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename, safe='')}"


async def available(storage: Storage, row: asyncpg.Record) -> tuple[str, int]:
    """(storage key, size) of a completed job's package, or Gone when retention removed it."""
    key = row["package_path"]
    if row["status"] != "completed":
        raise Conflict(f"export {row['job_id']} is {row['status']}, not completed", code="not_completed")
    if key is None or row["package_expired_at"] is not None or not await storage.exists(key):
        raise Gone("the package was removed by retention", code="package_expired")
    try:
        return key, await storage.size(key)
    except FileNotFoundError:
        raise Gone("the package was removed by retention", code="package_expired") from None


class BadRange(Exception):
    """The Range header asks for bytes the package doesn't have."""


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive (start, end) of a single `bytes=` range; None to send everything.

    Other units and multi-range requests get the whole package (RFC 9110 lets a server ignore
    Range); a malformed or unsatisfiable byte range raises BadRange (416).
    """
    if not header:
        return None
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes":
        return None
    if "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash or not (first.isdigit() or first == "") or not (last.isdigit() or last == ""):
        raise BadRange(header)
    if first == "":
        if last == "" or int(last) == 0 or size == 0:
            raise BadRange(header)
        return max(0, size - int(last)), size - 1
    start = int(first)
    end = size - 1 if last == "" else min(int(last), size - 1)
    if start >= size or (last != "" and int(last) < start):
        raise BadRange(header)
    return start, end


# -- endpoints ------------------------------------------------------------------------------

LINK_HEADERS = {"Location": {"description": "the signed URL", "schema": {"type": "string"}}}


@router.get(
    "/v1/exports/{job_id}/download",
    status_code=307,
    response_model=DownloadLink,
    responses={
        307: {"model": DownloadLink, "headers": LINK_HEADERS, "description": "redirect to a signed URL"},
        **errors(401, 404, 409, 410, 422),
    },
)
async def download_link(
    job_id: UUID, principal: PrincipalDep, pool: PoolDep, settings: SettingsDep, storage: StorageDep
) -> JSONResponse:
    """A signed, expiring URL for the finished package (307 to it; the body carries it too)."""
    row = await visible_job(pool, principal, job_id)
    key, _ = await available(storage, row)
    ttl = settings.download_url_ttl_seconds
    url = await storage.presigned_url(key, filename_of(key), ttl)
    if url is not None:
        expires = int(time.time()) + ttl
    else:
        url, expires = signed_url(settings, job_id, principal.user_id)
    link = DownloadLink(url=url, expires_at=datetime.fromtimestamp(expires, UTC))
    return JSONResponse(
        link.model_dump(mode="json"), 307, headers={"Location": url, "Cache-Control": "no-store"}
    )


@router.get(
    SIGNED_PATH,
    response_class=Response,
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "the package"},
        206: {"content": {"application/octet-stream": {}}, "description": "part of the package"},
        304: {"description": "not modified (If-None-Match)"},
        307: {"description": "redirect to the storage's own presigned URL"},
        **errors(403, 409, 410, 416, 422),
    },
)
async def download_signed(
    job_id: UUID,
    request: Request,
    pool: PoolDep,
    settings: SettingsDep,
    storage: StorageDep,
    expires: Annotated[int, Query(ge=0, le=2**53)],
    user: UUID,
    sig: Annotated[str, Query(min_length=1, max_length=128)],
    range_header: Annotated[str | None, Header(alias="Range")] = None,
    if_range: Annotated[str | None, Header()] = None,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """The package behind a signed URL: streamed, resumable with Range, cacheable by ETag."""
    verify(settings.jwt_secret, job_id, user, expires, sig, time.time())
    row = await jobs.get_job(pool, job_id)
    if row is None:  # the signature was ours, so the job existed: retention removed it
        raise Gone("the package was removed by retention", code="package_expired")
    if row["user_id"] != user and not await pool.fetchval(IS_ADMIN, user):
        raise Forbidden("the download link is no longer valid for this user", code="invalid_signature")
    key, size = await available(storage, row)
    presigned = await storage.presigned_url(key, filename_of(key), max(1, expires - int(time.time())))
    if presigned is not None:
        return RedirectResponse(presigned, 307)
    filename = filename_of(key)
    sha = (row["package_sha256"] or "").strip()
    etag = f'"{sha}"' if sha else None
    headers = {
        "Accept-Ranges": "bytes",
        "Content-Disposition": content_disposition(filename),
        "Cache-Control": "private, max-age=0",
        "X-Content-Type-Options": "nosniff",
    }
    if etag:
        headers["ETag"] = etag
        if etag_matches(if_none_match, etag):
            return Response(status_code=304, headers=headers)
    wanted: tuple[int, int] | None = None
    if if_range is None or (etag is not None and if_range.strip() == etag):
        try:
            wanted = parse_range(range_header, size)
        except BadRange:
            return error_response(
                416,
                "range_not_satisfiable",
                f"the package has {size} bytes; the requested range is not in it",
                {"Content-Range": f"bytes */{size}"},
            )
    if wanted is None:
        headers["Content-Length"] = str(size)
        return StreamingResponse(storage.stream(key), media_type=content_type(filename), headers=headers)
    start, end = wanted
    headers["Content-Length"] = str(end - start + 1)
    headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    return StreamingResponse(
        storage.stream(key, start, end), 206, media_type=content_type(filename), headers=headers
    )
