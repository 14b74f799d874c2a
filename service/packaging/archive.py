"""Reproducible archives with a manifest, and the path rules that keep entries inside them.

The same files give byte-identical archives: sorted entries, fixed mtimes, owners and modes.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import posixpath
import tarfile
import unicodedata
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from service.errors import InvalidInput

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST",
    "file_sha256",
    "safe_relpath",
    "verify_archive",
    "write_manifest",
    "write_tar_gz",
    "write_zip",
]

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
FIXED_MTIME = 315532800  # 1980-01-01, the earliest time a ZIP can store
ZIP_TIME = (1980, 1, 1, 0, 0, 0)
BUF = 1024 * 1024


def safe_relpath(name: str) -> str:
    """Normalise a tool-supplied relative path, refusing anything that could leave the root."""
    if not isinstance(name, str) or not name or "\x00" in name or "\\" in name:
        raise InvalidInput(f"unsafe path {name!r}", code="unsafe_path")
    if any(ord(c) < 32 for c in name):
        raise InvalidInput(f"unsafe path {name!r}", code="unsafe_path")
    name = unicodedata.normalize("NFC", name)
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise InvalidInput(f"absolute path {name!r}", code="unsafe_path")
    parts = name.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise InvalidInput(f"unsafe path {name!r}", code="unsafe_path")
    clean = posixpath.normpath(name)
    if len(clean.encode()) > 255 * 4:
        raise InvalidInput("path too long", code="unsafe_path")
    return clean


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(BUF):
            digest.update(chunk)
    return digest.hexdigest()


def _files(root: Path) -> list[Path]:
    return sorted(
        (p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST),
        key=lambda p: p.relative_to(root).as_posix(),
    )


def write_manifest(root: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """Write manifest.json at `root`: `meta` plus every file's path, size and sha256."""
    files = [
        {
            "path": p.relative_to(root).as_posix(),
            "size": p.stat().st_size,
            "sha256": file_sha256(p),
        }
        for p in _files(root)
    ]
    manifest = {"format_version": FORMAT_VERSION, **meta, "files": files}
    (root / MANIFEST).write_text(
        json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n", "utf-8"
    )
    return manifest


def _entries(root: Path) -> Iterable[Path]:
    manifest = root / MANIFEST
    if manifest.is_file():
        yield manifest
    yield from _files(root)


def write_tar_gz(root: Path, dest: Path) -> None:
    """A reproducible .tar.gz of `root` (manifest first)."""
    with (
        dest.open("wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for path in _entries(root):
            rel = path.relative_to(root).as_posix()
            info = tarfile.TarInfo(rel)
            info.size = path.stat().st_size
            info.mtime = FIXED_MTIME
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            with path.open("rb") as fh:
                tar.addfile(info, fh)


def write_zip(root: Path, dest: Path) -> None:
    """A reproducible ZIP of `root` (manifest first)."""
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        for path in _entries(root):
            info = zipfile.ZipInfo(path.relative_to(root).as_posix(), date_time=ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            with path.open("rb") as src, zf.open(info, "w") as out:
                while chunk := src.read(BUF):
                    out.write(chunk)


def _check_entries(manifest: dict[str, Any], read: Any, names: list[str]) -> None:
    listed = {f["path"]: f for f in manifest["files"]}
    for name in names:
        safe_relpath(name)
    present = {n for n in names if n != MANIFEST}
    if present != set(listed):
        raise InvalidInput("archive entries differ from its manifest", code="manifest_mismatch")
    for path, entry in listed.items():
        digest = hashlib.sha256()
        size = 0
        fh: IO[bytes] = read(path)
        with fh:
            while chunk := fh.read(BUF):
                digest.update(chunk)
                size += len(chunk)
        if size != entry["size"] or digest.hexdigest() != entry["sha256"]:
            raise InvalidInput(f"checksum mismatch for {path}", code="manifest_mismatch")


def verify_archive(path: Path) -> dict[str, Any]:
    """Read an archive back and check every file against its manifest; returns the manifest."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            manifest = json.loads(zf.read(MANIFEST))
            _check_entries(manifest, zf.open, zf.namelist())
            return dict(manifest)
    with tarfile.open(path, "r:gz") as tar:
        members = [m for m in tar.getmembers() if m.isfile()]
        names = [m.name for m in members]
        fh = tar.extractfile(MANIFEST)
        if fh is None:
            raise InvalidInput("archive has no manifest.json", code="manifest_mismatch")
        manifest = json.loads(fh.read())

        def read(name: str) -> IO[bytes]:
            member = tar.extractfile(name)
            assert member is not None
            return member

        _check_entries(manifest, read, names)
        return dict(manifest)
