"""LocalStorage: atomic puts, idempotent deletes, ranged streams and keys that stay inside the root."""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import threading
from pathlib import Path

import pytest

from service.config import Settings
from service.errors import InvalidInput
from service.storage import CHUNK, LocalStorage, open_storage


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "packages")


def source_file(tmp_path: Path, data: bytes, name: str = "source.bin") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


async def read(storage: LocalStorage, key: str, start: int = 0, end: int | None = None) -> bytes:
    chunks = [chunk async for chunk in storage.stream(key, start, end)]
    assert all(0 < len(chunk) <= CHUNK for chunk in chunks)
    return b"".join(chunks)


async def test_put_stores_the_file_and_leaves_nothing_else(storage: LocalStorage, tmp_path: Path) -> None:
    data = os.urandom(CHUNK + 10)
    await storage.put("job-1/package.tar.gz", source_file(tmp_path, data), "application/gzip")
    assert await storage.exists("job-1/package.tar.gz")
    assert await storage.size("job-1/package.tar.gz") == len(data)
    assert await read(storage, "job-1/package.tar.gz") == data
    assert files_under(storage.root) == ["job-1/package.tar.gz"]
    assert await storage.presigned_url("job-1/package.tar.gz", "package.tar.gz", 60) is None


async def test_failed_put_keeps_the_previous_package_whole(
    storage: LocalStorage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each version from a file of its own, as jobs write them (a put may link to its source).
    await storage.put("job-2/p.zip", source_file(tmp_path, b"first version", "v1.bin"), "application/zip")

    def copy_half_then_fail(src: Path, dst: Path) -> None:
        Path(dst).write_bytes(Path(src).read_bytes()[:4])
        raise OSError("disk full")

    monkeypatch.setattr(shutil, "copyfile", copy_half_then_fail)
    monkeypatch.setattr(os, "link", _cross_device)  # take the copying path
    with pytest.raises(OSError, match="disk full"):
        await storage.put("job-2/p.zip", source_file(tmp_path, b"second version"), "application/zip")
    assert await read(storage, "job-2/p.zip") == b"first version"
    assert files_under(storage.root) == ["job-2/p.zip"]  # no partial file left behind


async def test_failed_first_put_makes_nothing_visible(
    storage: LocalStorage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(src: Path, dst: Path) -> None:
        Path(dst).write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(shutil, "copyfile", fail)

    monkeypatch.setattr(os, "link", _cross_device)  # take the copying path
    with pytest.raises(OSError):
        await storage.put("job-3/p.zip", source_file(tmp_path, b"data"), "application/zip")
    assert not await storage.exists("job-3/p.zip")
    assert files_under(storage.root) == []


async def test_put_replaces_an_existing_package(storage: LocalStorage, tmp_path: Path) -> None:
    await storage.put("job-4/p.zip", source_file(tmp_path, b"old", "a"), "application/zip")
    await storage.put("job-4/p.zip", source_file(tmp_path, b"new", "b"), "application/zip")
    assert await read(storage, "job-4/p.zip") == b"new"


async def test_delete_of_a_missing_key_is_not_an_error(storage: LocalStorage, tmp_path: Path) -> None:
    await storage.delete("never/stored.zip")
    await storage.put("job-5/p.zip", source_file(tmp_path, b"data"), "application/zip")
    await storage.put("job-5/other.zip", source_file(tmp_path, b"data"), "application/zip")

    await storage.delete("job-5/p.zip")
    assert not await storage.exists("job-5/p.zip")
    assert await storage.exists("job-5/other.zip")  # the directory stays while it holds files
    await storage.delete("job-5/p.zip")
    await storage.delete("job-5/other.zip")
    assert not (storage.root / "job-5").exists()  # ... and goes with its last file
    with pytest.raises(FileNotFoundError):
        await storage.size("job-5/p.zip")


async def test_stream_ranges(storage: LocalStorage, tmp_path: Path) -> None:
    data = os.urandom(2 * CHUNK + 123)
    await storage.put("job-6/p.bin", source_file(tmp_path, data), "application/octet-stream")
    assert await read(storage, "job-6/p.bin") == data
    assert await read(storage, "job-6/p.bin", 0, 0) == data[:1]
    assert await read(storage, "job-6/p.bin", 10, 19) == data[10:20]
    assert await read(storage, "job-6/p.bin", CHUNK - 1, CHUNK + 1) == data[CHUNK - 1 : CHUNK + 2]
    assert await read(storage, "job-6/p.bin", CHUNK) == data[CHUNK:]
    assert await read(storage, "job-6/p.bin", len(data) - 5, len(data) + 100) == data[-5:]
    assert await read(storage, "job-6/p.bin", len(data)) == b""


@pytest.mark.parametrize(
    "key", ["../escape.zip", "job/../../escape.zip", "..", "/etc/passwd", "", "a\\..\\b.zip", "a\x00b"]
)
async def test_keys_outside_the_root_are_refused(storage: LocalStorage, tmp_path: Path, key: str) -> None:
    source = source_file(tmp_path, b"data")
    with pytest.raises(InvalidInput):
        await storage.put(key, source, "application/zip")
    with pytest.raises(InvalidInput):
        await storage.delete(key)
    with pytest.raises(InvalidInput):
        await storage.exists(key)
    assert not (tmp_path / "escape.zip").exists()


def test_open_storage_defaults_to_a_directory(tmp_path: Path) -> None:
    backend = open_storage(Settings(storage_dir=tmp_path))
    assert isinstance(backend, LocalStorage)
    assert backend.root == (tmp_path / "packages").resolve()
    explicit = open_storage(Settings(storage_url=f"file://{tmp_path}/elsewhere"))
    assert isinstance(explicit, LocalStorage)
    assert explicit.root == tmp_path / "elsewhere"


async def test_cancelled_put_leaves_no_package(
    storage: LocalStorage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started, release = threading.Event(), threading.Event()
    real_copy = shutil.copyfile

    def slow_copy(src: Path, dst: Path) -> None:
        started.set()
        release.wait(10)
        real_copy(src, dst)

    monkeypatch.setattr(shutil, "copyfile", slow_copy)

    monkeypatch.setattr(os, "link", _cross_device)  # take the copying path
    put = asyncio.create_task(storage.put("job-7/p.zip", source_file(tmp_path, b"data"), "application/zip"))
    assert await asyncio.to_thread(started.wait, 10)
    put.cancel()
    await asyncio.sleep(0.05)  # the put is now waiting for its copy to end
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await put
    assert files_under(storage.root) == []


def _cross_device(src: object, dst: object) -> None:
    raise OSError(errno.EXDEV, "Invalid cross-device link")


async def test_put_on_the_same_filesystem_links_instead_of_copying(
    storage: LocalStorage, tmp_path: Path
) -> None:
    source = source_file(tmp_path, b"zip bytes", "package.zip")
    await storage.put("job/package.zip", source, "application/zip")
    stored = storage.path("job/package.zip")
    assert stored.stat().st_ino == source.stat().st_ino
    source.unlink()  # the job's work directory goes away; the package stays
    assert stored.read_bytes() == b"zip bytes"
