"""Retry decisions are a pure function of the exception."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from service.errors import InvalidInput, PermanentError, StepTimeout, TransientError, is_transient


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (TransientError("busy"), True),
        (ConnectionResetError(), True),
        (ConnectionRefusedError(), True),
        (asyncpg.exceptions.ConnectionDoesNotExistError("gone"), True),
        (asyncpg.exceptions.SerializationError("retry me"), True),
        (PermanentError("broken"), False),
        (StepTimeout("slow"), False),
        (InvalidInput("bad"), False),
        (asyncio.CancelledError(), False),
        (TimeoutError(), False),
        (ValueError("bug"), False),
        (asyncpg.exceptions.UniqueViolationError("dup"), False),
    ],
)
def test_is_transient(exc: BaseException, transient: bool) -> None:
    assert is_transient(exc) is transient
