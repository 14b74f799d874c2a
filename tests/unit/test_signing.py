"""Signed download URLs, Range parsing, Content-Disposition and history cursors."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit
from uuid import uuid4

import pytest

from service.api.downloads import (
    BadRange,
    content_disposition,
    content_type,
    expiry,
    parse_range,
    sign,
    signed_url,
    verify,
)
from service.api.exports import decode_cursor, encode_cursor
from service.config import Settings
from service.errors import Forbidden, InvalidInput

SECRET = "unit-secret-0123456789abcdef-0123456789"


def test_a_signature_verifies_only_for_its_own_values() -> None:
    job, user, other = uuid4(), uuid4(), uuid4()
    sig = sign(SECRET, job, user, 2000)
    verify(SECRET, job, user, 2000, sig, now=1000)
    for args in [(other, user, 2000), (job, other, 2000), (job, user, 2001)]:
        with pytest.raises(Forbidden) as caught:
            verify(SECRET, *args, sig, now=1000)
        assert caught.value.code == "invalid_signature"
    with pytest.raises(Forbidden):
        verify("another-secret-0123456789abcdef-01234", job, user, 2000, sig, now=1000)
    with pytest.raises(Forbidden):
        verify(SECRET, job, user, 2000, sig.upper(), now=1000)


def test_an_expired_signature_is_refused_with_its_own_code() -> None:
    job, user = uuid4(), uuid4()
    sig = sign(SECRET, job, user, 2000)
    with pytest.raises(Forbidden) as caught:
        verify(SECRET, job, user, 2000, sig, now=2000)
    assert caught.value.code == "link_expired"


def test_the_download_key_is_not_the_jwt_secret() -> None:
    import hashlib
    import hmac

    job, user = uuid4(), uuid4()
    plain = hmac.new(SECRET.encode(), f"{job}\n{user}\n5".encode(), hashlib.sha256).hexdigest()
    assert sign(SECRET, job, user, 5) != plain


def test_expiry_is_at_least_the_ttl_and_stable_within_a_step() -> None:
    assert expiry(3600, 1000.0) >= 4600
    assert expiry(3600, 1000.0) == expiry(3600, 1010.0)
    assert expiry(3600, 1000.0) - 1000 < 3600 + 60
    assert expiry(1, 1000.5) >= 1001.5


def test_signed_url_carries_the_values_it_signs() -> None:
    settings = Settings(
        jwt_secret=SECRET, public_url="https://exports.example.com/", download_url_ttl_seconds=600
    )
    job, user = uuid4(), uuid4()
    url, expires = signed_url(settings, job, user, now=1000)
    parts = urlsplit(url)
    assert url.startswith(f"https://exports.example.com/v1/downloads/{job}?")
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert query["user"] == str(user) and int(query["expires"]) == expires >= 1600
    verify(SECRET, job, user, expires, query["sig"], now=1000)


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        (None, 100, None),
        ("bytes=0-9", 100, (0, 9)),
        ("bytes=10-", 100, (10, 99)),
        ("bytes=-10", 100, (90, 99)),
        ("bytes=-500", 100, (0, 99)),
        ("bytes=90-500", 100, (90, 99)),
        ("bytes=99-99", 100, (99, 99)),
        ("items=0-5", 100, None),  # other units: ignored
        ("bytes=0-1,5-6", 100, None),  # multi-range: whole body
    ],
)
def test_ranges(header: str | None, size: int, expected: tuple[int, int] | None) -> None:
    assert parse_range(header, size) == expected


@pytest.mark.parametrize(
    "header", ["bytes=100-", "bytes=200-300", "bytes=5-2", "bytes=-0", "bytes=a-b", "bytes=-", "bytes=1"]
)
def test_bad_ranges_raise(header: str) -> None:
    with pytest.raises(BadRange):
        parse_range(header, 100)


def test_empty_package_has_no_satisfiable_range() -> None:
    with pytest.raises(BadRange):
        parse_range("bytes=0-", 0)


@pytest.mark.parametrize(
    "name",
    [
        "bundle.zip",
        'naïve "café".tar.gz',
        "a\r\nSet-Cookie: x=1.zip",
        "../../etc/passwd",
        "☃.pdf",
        "x;y=z.csv",
    ],
)
def test_content_disposition_cannot_break_the_header(name: str) -> None:
    value = content_disposition(name)
    assert "\r" not in value and "\n" not in value
    assert value.startswith('attachment; filename="')
    fallback = value.split('filename="', 1)[1].split('"', 1)[0]
    assert fallback and all(c.isalnum() or c in "._ -" for c in fallback)
    from urllib.parse import unquote

    assert unquote(value.split("filename*=UTF-8''", 1)[1]) == name


def test_content_types() -> None:
    assert content_type("x.zip") == "application/zip"
    assert content_type("x.tar.gz") == "application/gzip"
    assert content_type("x.pdf") == "application/pdf"
    assert content_type("x.bin") == "application/octet-stream"


def test_cursor_round_trips_exactly() -> None:
    row = {"created_at": datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC), "job_id": uuid4()}
    assert decode_cursor(encode_cursor(row)) == (row["created_at"], row["job_id"])


@pytest.mark.parametrize("cursor", ["", "!!!", "bm90IGpzb24", "WzFd", "WyIyMDI2LTAxLTAxIiwgIngiXQ"])
def test_bad_cursors_are_invalid_input(cursor: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        decode_cursor(cursor)
    assert caught.value.code == "invalid_cursor"


def test_a_non_ascii_signature_is_refused_not_an_error() -> None:
    with pytest.raises(Forbidden):
        verify(SECRET, uuid4(), uuid4(), 2000, "ñå\x8b$\U000872c6", now=1000)
