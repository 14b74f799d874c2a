"""The verified-token cache never accepts what `authenticate` would refuse."""

from __future__ import annotations

import time
from uuid import uuid4

import pytest

from service.api import deps
from service.api.auth import issue_token
from service.errors import Unauthenticated

SECRET = "unit-secret-0123456789abcdef-0123456789"


def test_a_verified_token_is_served_from_the_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    tokens = deps.VerifiedTokens()
    user = uuid4()
    header = f"Bearer {issue_token(SECRET, user, ['exporter'])}"
    first = tokens.principal(SECRET, header)
    calls = []
    monkeypatch.setattr(deps, "authenticate", lambda *a: calls.append(a))
    assert tokens.principal(SECRET, header) is first and calls == []
    assert first.user_id == user and first.roles == frozenset({"exporter"})


def test_a_cached_token_stops_working_at_its_expiry() -> None:
    tokens = deps.VerifiedTokens()
    header = f"Bearer {issue_token(SECRET, uuid4(), ['exporter'], ttl_seconds=1)}"
    tokens.principal(SECRET, header)
    time.sleep(2.1)  # exp has whole-second resolution
    with pytest.raises(Unauthenticated) as caught:
        tokens.principal(SECRET, header)
    assert caught.value.code == "token_expired"


@pytest.mark.parametrize("header", [None, "Bearer nope", "Basic abc"])
def test_invalid_headers_are_refused_and_not_cached(header: str | None) -> None:
    tokens = deps.VerifiedTokens()
    with pytest.raises(Unauthenticated):
        tokens.principal(SECRET, header)
    assert len(tokens._seen) == 0


def test_another_secret_is_refused() -> None:
    header = f"Bearer {issue_token(SECRET, uuid4(), [])}"
    with pytest.raises(Unauthenticated):
        deps.VerifiedTokens().principal("another-secret-0123456789abcdef-012345", header)


def test_the_cache_is_bounded() -> None:
    tokens = deps.VerifiedTokens(max_size=3)
    for _ in range(5):
        tokens.principal(SECRET, f"Bearer {issue_token(SECRET, uuid4(), [])}")
    assert len(tokens._seen) == 3
