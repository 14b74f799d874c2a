"""Where finished packages live: one interface, a local-directory backend and S3.

Workers build packages in a local working directory and hand the finished file to
`put` once, so a partial package never becomes visible to a download.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol
from urllib.parse import urlparse

from service.config import Settings
from service.errors import InvalidInput

__all__ = ["LocalStorage", "Storage", "open_storage"]

CHUNK = 1024 * 1024


class Storage(Protocol):
    async def put(self, key: str, source: Path, content_type: str) -> None:
        """Store the file at `source` under `key`, atomically."""

    async def delete(self, key: str) -> None:
        """Remove `key`; a missing key is not an error."""

    async def exists(self, key: str) -> bool: ...

    async def size(self, key: str) -> int: ...

    def stream(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """Bytes of `key` from `start` to `end` inclusive."""
        ...

    async def presigned_url(self, key: str, filename: str, ttl_seconds: int) -> str | None:
        """A URL the client can fetch directly, or None when the API must serve the bytes."""


def check_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or "\\" in key or "\x00" in key or ".." in parts:
        raise InvalidInput(f"invalid storage key {key!r}", code="invalid_storage_key")
    return key


class LocalStorage:
    """Packages as files under one directory (one machine, tests, the quick start).

    `put` hard-links the source when it can (same filesystem): a job never rewrites a file
    it uploaded, it writes a new one, so the stored package can share the source's inode.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, key: str) -> Path:
        return self.root / check_key(key)

    async def put(self, key: str, source: Path, content_type: str) -> None:
        target = self.path(key)

        def copy() -> None:
            target.parent.mkdir(parents=True, exist_ok=True)
            # A name of its own per put, removed on failure, so two puts never share a partial
            # file and a failed one leaves nothing behind (delete could not remove the directory).
            partial = target.with_name(f".{target.name}.{secrets.token_hex(4)}.partial")
            try:
                try:  # the work directory is usually on the same filesystem: no copy needed
                    os.link(source, partial)
                except OSError:
                    shutil.copyfile(source, partial)
                os.replace(partial, target)
            except BaseException:
                partial.unlink(missing_ok=True)
                raise

        copying = asyncio.ensure_future(asyncio.to_thread(copy))
        try:
            await asyncio.shield(copying)
        except asyncio.CancelledError:
            # A thread cannot be interrupted: let the copy end, then take its result away, so a
            # cancelled put (a cancelled job) leaves no package behind, as S3's abort does.
            with contextlib.suppress(Exception):
                await copying
                await asyncio.to_thread(target.unlink, missing_ok=True)
            raise

    async def delete(self, key: str) -> None:
        target = self.path(key)
        await asyncio.to_thread(target.unlink, missing_ok=True)
        with contextlib.suppress(OSError):  # other files still there
            target.parent.rmdir()

    async def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    async def size(self, key: str) -> int:
        return self.path(key).stat().st_size

    async def stream(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        path = self.path(key)
        remaining = (end + 1 - start) if end is not None else None
        with path.open("rb") as fh:
            fh.seek(start)
            while remaining is None or remaining > 0:
                chunk = await asyncio.to_thread(
                    fh.read, CHUNK if remaining is None else min(CHUNK, remaining)
                )
                if not chunk:
                    break
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk

    async def presigned_url(self, key: str, filename: str, ttl_seconds: int) -> str | None:
        return None


def open_storage(settings: Settings) -> Storage:
    """The backend named by EXPORTER_STORAGE_URL (file:// by default)."""
    url = urlparse(settings.packages_url)
    if url.scheme == "file":
        return LocalStorage(Path(url.path))
    if url.scheme == "s3":
        from service.storage_s3 import S3Storage

        backend: Storage = S3Storage.from_settings(settings)
        return backend
    raise InvalidInput(f"unsupported storage URL {settings.packages_url!r}")
