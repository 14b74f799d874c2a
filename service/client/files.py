"""Downloading a package (resumable), checking it against its checksum and manifest, extracting
it without ever writing outside the target directory."""

from __future__ import annotations

import asyncio
import hashlib
import re
import shutil
import stat
import tarfile
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx

from service.client.http import EXIT, ApiClient, ApiError, error_of
from service.errors import InvalidInput
from service.packaging.archive import safe_relpath, verify_archive

__all__ = ["download", "extract", "is_archive", "verify"]

CHUNK = 1024 * 1024


def _failure(message: str) -> ApiError:
    return ApiError(None, "verification_failed", message, EXIT["verification"])


def filename_from(disposition: str | None, fallback: str) -> str:
    """The server's filename (RFC 6266 `filename*` first), reduced to a bare, safe name."""
    name = ""
    if disposition:
        star = re.search(r"filename\*=UTF-8''([^;]+)", disposition, re.IGNORECASE)
        plain = re.search(r'filename="([^"]*)"', disposition)
        name = unquote(star.group(1)) if star else (plain.group(1) if plain else "")
    name = Path(name.replace("\\", "/")).name.strip()
    if not name or name in (".", "..") or any(ord(c) < 32 for c in name):
        return fallback
    return name


async def _fetch(api: ApiClient, url: str, part: Path, expected_etag: str | None) -> httpx.Headers:
    """Fetch `url` into `part`, resuming with Range after a dropped connection."""
    attempt = 0
    while True:
        have = _size(part)
        headers = {"Range": f"bytes={have}-", "If-Range": expected_etag} if have and expected_etag else {}
        try:
            async with api.stream(url, headers) as response:
                if response.status_code == 416 and have:  # already complete
                    return response.headers
                if response.status_code not in (200, 206):
                    await response.aread()
                    raise error_of(response)
                mode = "ab" if response.status_code == 206 else "wb"
                with part.open(mode) as out:
                    async for chunk in response.aiter_bytes(CHUNK):
                        out.write(chunk)
                return response.headers
        except httpx.TransportError as exc:
            if attempt >= api.retries:
                raise ApiError(None, "network_error", f"download interrupted: {exc!r}") from None
            await asyncio.sleep(api.delay(attempt))
            attempt += 1


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def is_archive(path: Path) -> bool:
    return zipfile.is_zipfile(path) or tarfile.is_tarfile(path)


def verify(path: Path, job: dict[str, Any]) -> dict[str, Any] | None:
    """Check size and sha256 against the job, then every manifest entry; the manifest or None."""
    size = path.stat().st_size
    if job.get("package_size_bytes") is not None and size != job["package_size_bytes"]:
        raise _failure(f"{path.name}: {size} bytes, expected {job['package_size_bytes']}")
    if job.get("package_sha256") and _sha256(path) != job["package_sha256"]:
        raise _failure(f"{path.name}: sha256 differs from the job's package_sha256")
    if not is_archive(path):
        return None
    try:
        return verify_archive(path)
    except (InvalidInput, KeyError, ValueError, OSError, tarfile.TarError, zipfile.BadZipFile) as exc:
        raise _failure(f"{path.name}: {exc}") from None


async def download(api: ApiClient, job: dict[str, Any], out: Path | None) -> Path:
    """Download the job's package to `out` (a file, a directory, or None for the current one)."""
    url = await api.download_url(job["job_id"])
    etag = f'"{job["package_sha256"]}"' if job.get("package_sha256") else None
    fallback = f"export_{job['job_id']}"
    directory, named = _where(out)
    part = directory / f".{named or fallback}.part"
    headers = await _fetch(api, url, part, etag)
    target = directory / (named or filename_from(headers.get("content-disposition"), fallback))
    part.replace(target)
    return target


def _where(out: Path | None) -> tuple[Path, str | None]:
    """(directory to write in, the file name asked for or None to take the server's)."""
    if out is None:
        return Path.cwd(), None
    if out.is_dir():
        return out, None
    return out.parent, out.name


def extract(archive: Path, dest: Path) -> list[str]:
    """Unpack into `dest`; every entry must land inside it (no absolute paths, `..`, links)."""
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    written: list[str] = []
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    if info.is_dir():
                        continue
                    if stat.S_ISLNK(info.external_attr >> 16):
                        raise _failure(f"refusing link entry {info.filename!r}")
                    rel = safe_relpath(info.filename)
                    target = (root / rel).resolve()
                    if not target.is_relative_to(root):
                        raise _failure(f"entry {info.filename!r} would leave {dest}")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(info) as src, target.open("wb") as sink:
                        shutil.copyfileobj(src, sink, CHUNK)
                    written.append(rel)
        else:
            with tarfile.open(archive, "r:*") as tar:
                for member in tar.getmembers():
                    safe_relpath(member.name)
                # The "data" filter refuses absolute paths, `..`, links out, devices, modes.
                tar.extractall(root, filter="data")
                written = [m.name for m in tar.getmembers() if m.isfile()]
    except (InvalidInput, tarfile.FilterError) as exc:
        raise _failure(f"unsafe archive: {exc}") from None
    return written
