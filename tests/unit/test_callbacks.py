"""Callback URL validation, option splitting and signatures, without I/O."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from service import callbacks
from service.config import Settings
from service.errors import InvalidInput


@pytest.mark.parametrize(
    "url", ["http://hooks.internal/x", "https://example.com:8443/cb?x=1", "http://127.0.0.1:9000/hook"]
)
def test_http_urls_are_accepted(url: str) -> None:
    assert callbacks.validate_url(url) == url


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/x",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "http://",
        "https://user:pw@example.com/",
        "http://example.com:0/",
        "http://example.com:99999/",
        "http://exa mple.com/",
        "http://example.com/\r\nX: y",
        "",
        "x" * 3000,
        7,
        ["http://example.com"],
    ],
)
def test_other_urls_are_refused(url: object) -> None:
    with pytest.raises(InvalidInput) as caught:
        callbacks.validate_url(url)
    assert caught.value.code == "invalid_callback_url"


def test_split_options_takes_the_callback_out() -> None:
    rest, url = callbacks.split_options({"callback_url": "https://x.example/cb", "delimiter": ";"})
    assert rest == {"delimiter": ";"} and url == "https://x.example/cb"
    assert callbacks.split_options({"a": 1}) == ({"a": 1}, None)
    assert callbacks.split_options({"callback_url": None}) == ({}, None)
    assert callbacks.strategy_options({"callback_url": "https://x", "a": 1}) == {"a": 1}


def test_signature_is_hmac_sha256_of_the_body_under_a_derived_key() -> None:
    settings = Settings(jwt_secret="s" * 40)
    key = callbacks.signing_key(settings)
    assert key != settings.jwt_secret.encode()
    body = b'{"job_id":"x"}'
    header = callbacks.sign(key, body)
    assert header == "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()
    assert callbacks.verify(key, body, header)
    assert not callbacks.verify(key, body + b" ", header)
    assert not callbacks.verify(key, body, None)
    assert not callbacks.verify(callbacks.signing_key(Settings(jwt_secret="t" * 40)), body, header)
