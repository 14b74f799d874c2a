"""The client without a server: retries, error mapping, file names, verification, safe extraction."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.client import _options
from service.client.files import extract, filename_from, verify
from service.client.http import EXIT, ApiClient, ApiError, exit_code_for
from service.client.progress import eta
from service.packaging.archive import write_manifest, write_zip


def scripted(*answers: httpx.Response | Exception) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    seen: list[httpx.Request] = []
    queue = list(answers)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = queue.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    return httpx.MockTransport(handler), seen


def error(status: int, code: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(
        status, json={"error": {"code": code, "message": f"{code} happened"}}, headers=headers
    )


JOB = {"job_id": "j1", "status": "pending"}


async def test_network_errors_and_503_are_retried_with_the_same_idempotency_key() -> None:
    transport, seen = scripted(
        httpx.ConnectError("refused"),
        httpx.ReadTimeout("slow"),
        error(503, "unavailable", {"Retry-After": "0"}),
        httpx.Response(202, json=JOB),
    )
    async with ApiClient("http://api", "t", backoff=0, transport=transport) as api:
        assert await api.submit("tool", "bundle", {}) == JOB
    assert len(seen) == 4
    keys = {r.headers["idempotency-key"] for r in seen}
    assert len(keys) == 1  # a resend is the same request: the API returns the same job
    assert seen[0].headers["authorization"] == "Bearer t"


async def test_a_post_without_idempotency_is_not_resent_after_a_read_error() -> None:
    transport, seen = scripted(httpx.ReadTimeout("slow"), httpx.Response(202, json=JOB))
    async with ApiClient("http://api", "t", backoff=0, transport=transport) as api:
        with pytest.raises(ApiError) as caught:
            await api.retry("j1")
    assert len(seen) == 1 and caught.value.exit_code == EXIT["network"]


async def test_429_waits_for_retry_after_then_gives_up_with_its_exit_code() -> None:
    transport, seen = scripted(*[error(429, "rate_limited", {"Retry-After": "0"})] * 3)
    async with ApiClient("http://api", "t", retries=2, backoff=0, transport=transport) as api:
        with pytest.raises(ApiError) as caught:
            await api.status("j1")
    assert len(seen) == 3
    assert caught.value.exit_code == EXIT["rate_limited"] == 8
    assert "slow down" in str(caught.value)


@pytest.mark.parametrize(
    ("status", "code", "exit_code"),
    [
        (401, "invalid_token", 3),
        (403, "forbidden", 4),
        (404, "job_not_found", 5),
        (409, "job_finished", 6),
        (410, "package_expired", 7),
        (422, "invalid_request", 2),
        (500, "internal_error", 9),
    ],
)
async def test_errors_are_not_retried_and_map_to_distinct_exit_codes(
    status: int, code: str, exit_code: int
) -> None:
    transport, seen = scripted(error(status, code))
    async with ApiClient("http://api", "t", retries=0, backoff=0, transport=transport) as api:
        with pytest.raises(ApiError) as caught:
            await api.cancel("j1")
    assert caught.value.exit_code == exit_code
    assert caught.value.code == code and f"HTTP {status}" in str(caught.value)
    assert len(seen) == 1


def test_every_outcome_has_its_own_exit_code() -> None:
    assert len(set(EXIT.values())) == len(EXIT)
    assert exit_code_for(None) == EXIT["network"] and exit_code_for(502) == EXIT["server_error"]


async def test_unreachable_api_is_a_network_error_after_retries() -> None:
    transport, seen = scripted(*[httpx.ConnectError("refused")] * 3)
    async with ApiClient("http://api", "t", retries=2, backoff=0, transport=transport) as api:
        with pytest.raises(ApiError) as caught:
            await api.status("j1")
    assert len(seen) == 3 and caught.value.exit_code == 10


def test_options_parse_json_values() -> None:
    assert _options(["a=1", "b=x", "c=true", 'd=["x"]', "e=a=b"]) == {
        "a": 1,
        "b": "x",
        "c": True,
        "d": ["x"],
        "e": "a=b",
    }
    with pytest.raises(ApiError) as caught:
        _options(["novalue"])
    assert caught.value.exit_code == EXIT["usage"]


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("attachment; filename=\"x.zip\"; filename*=UTF-8''na%C3%AFve.zip", "naïve.zip"),
        ('attachment; filename="plain.zip"', "plain.zip"),
        ("attachment; filename*=UTF-8''..%2F..%2Fetc%2Fpasswd", "passwd"),
        ("attachment; filename*=UTF-8''..", "fallback"),
        (None, "fallback"),
    ],
)
def test_server_filenames_are_reduced_to_a_bare_name(header: str | None, name: str) -> None:
    assert filename_from(header, "fallback") == name


def test_eta_extrapolates_from_progress() -> None:
    job = {"status": "in_progress", "progress_percentage": 25, "started_at": "2026-01-01T00:00:00Z"}
    start = 1767225600.0  # 2026-01-01T00:00:00Z
    assert eta(job, start + 60) == "0:03:00"
    assert eta({**job, "progress_percentage": 0}, start + 60) == "-:--:--"
    assert eta({**job, "status": "completed"}, start) == "0:00:00"


def make_bundle(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    root = tmp_path / "src"
    (root / "media").mkdir(parents=True)
    (root / "definition.json").write_text('{"a": 1}')
    (root / "media" / "logo.png").write_bytes(b"\x89PNG" + bytes(100))
    write_manifest(root, {"tool": "t"})
    archive = tmp_path / "bundle.zip"
    write_zip(root, archive)
    data = archive.read_bytes()
    return archive, {"package_size_bytes": len(data), "package_sha256": hashlib.sha256(data).hexdigest()}


def test_a_good_package_verifies_and_extracts(tmp_path: Path) -> None:
    archive, job = make_bundle(tmp_path)
    manifest = verify(archive, job)
    assert manifest is not None and len(manifest["files"]) == 2
    files = extract(archive, tmp_path / "out")
    assert sorted(files) == ["definition.json", "manifest.json", "media/logo.png"]
    assert (tmp_path / "out" / "media" / "logo.png").read_bytes().startswith(b"\x89PNG")


def test_a_changed_byte_fails_verification(tmp_path: Path) -> None:
    archive, job = make_bundle(tmp_path)
    with pytest.raises(ApiError) as caught:
        verify(archive, {**job, "package_sha256": "0" * 64})
    assert caught.value.exit_code == EXIT["verification"]
    with pytest.raises(ApiError):
        verify(archive, {**job, "package_size_bytes": 1})


def test_a_manifest_mismatch_fails_verification(tmp_path: Path) -> None:
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(
            "manifest.json", json.dumps({"files": [{"path": "a.txt", "size": 1, "sha256": "0" * 64}]})
        )
        zf.writestr("a.txt", "b")
    with pytest.raises(ApiError) as caught:
        verify(archive, {})
    assert caught.value.exit_code == EXIT["verification"]


@pytest.mark.parametrize("name", ["../escape.txt", "/abs.txt", "a/../../escape.txt", "C:/x.txt", "a\\..\\b"])
def test_zip_entries_never_leave_the_target(tmp_path: Path, name: str) -> None:
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(name, "pwned")
    target = tmp_path / "deep" / "out"
    with pytest.raises(ApiError) as caught:
        extract(archive, target)
    assert caught.value.exit_code == EXIT["verification"]
    assert not (tmp_path / "deep" / "escape.txt").exists() and not (tmp_path / "escape.txt").exists()


def test_zip_symlinks_are_refused(tmp_path: Path) -> None:
    archive = tmp_path / "link.zip"
    info = zipfile.ZipInfo("link")
    info.external_attr = 0o120777 << 16
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(ApiError):
        extract(archive, tmp_path / "out")


@pytest.mark.parametrize("kind", ["traversal", "absolute", "symlink"])
def test_tar_entries_never_leave_the_target(tmp_path: Path, kind: str) -> None:
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        if kind == "symlink":
            info = tarfile.TarInfo("link")
            info.type = tarfile.SYMTYPE
            info.linkname = "../../outside"
            tar.addfile(info)
        else:
            data = b"pwned"
            info = tarfile.TarInfo("../escape.txt" if kind == "traversal" else "/abs-escape.txt")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(ApiError):
        extract(archive, tmp_path / "out")
    assert not (tmp_path / "escape.txt").exists()
