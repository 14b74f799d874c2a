"""Reading the dead-letter queue without losing anything: what a dead letter says about
itself, which ones a command acts on, and a scan that puts back what it doesn't take."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO
from urllib.parse import urlparse

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractIncomingMessage,
    AbstractQueue,
)

from service.broker import AT_HEADER, DELIVERIES_HEADER, DETAIL_HEADER, REASON_HEADER
from service.config import Settings
from service.messages import Topology

__all__ = ["DeadLetter", "Filter", "Scanner", "Unavailable", "listing", "purge"]

REPLAYS_HEADER = "x-export-replays"
IDLE_SECONDS = 2.0  # a scan ends early when the queue hands out nothing for this long
MAX_PREFETCH = 65535  # AMQP's limit: one scan holds at most this many letters unacked


class Unavailable(Exception):
    """RabbitMQ or PostgreSQL did not answer, or there is no such queue; nothing changed."""


@dataclass
class DeadLetter:
    """One message in the dead-letter queue, with what its headers say about it."""

    message: AbstractIncomingMessage
    id: str
    job_id: str
    reason: str
    detail: str
    dead_lettered_at: str
    deliveries: int | None

    @classmethod
    def of(cls, message: AbstractIncomingMessage) -> DeadLetter:
        headers = dict(message.headers or {})
        death = _first_death(headers)
        at = headers.get(AT_HEADER) or death.get("time") or message.timestamp
        when = at.astimezone(UTC).isoformat() if isinstance(at, datetime) else str(at or "-")
        reason = headers.get(REASON_HEADER) or headers.get("x-first-death-reason") or death.get("reason")
        deliveries = headers.get(DELIVERIES_HEADER)
        # Stable across requeues: x-delivery-count, which changes on each, is left out.
        digest = hashlib.sha256(f"{message.message_id}|{when}|".encode() + message.body).hexdigest()
        return cls(
            message=message,
            id=digest[:12],
            job_id=_job_id(message),
            reason=text(reason or "unknown"),
            detail=text(headers.get(DETAIL_HEADER) or ""),
            dead_lettered_at=when,
            deliveries=int(deliveries) if isinstance(deliveries, int) else None,
        )

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "dead_lettered_at": self.dead_lettered_at,
            "job_id": self.job_id,
            "reason": self.reason,
            "detail": self.detail,
            "deliveries": self.deliveries,
            "message_id": self.message.message_id,
            "replays": replays(self.message),
        }


@dataclass(frozen=True)
class Filter:
    """Which dead letters a command acts on; no criteria means all of them."""

    job_id: str | None = None
    reason: str | None = None
    id: str | None = None

    def __call__(self, letter: DeadLetter) -> bool:
        return (
            (self.job_id is None or letter.job_id == self.job_id)
            and (self.reason is None or letter.reason == self.reason)
            and (self.id is None or self.id in (letter.id, letter.job_id))
        )

    @property
    def narrowed(self) -> bool:
        return any((self.job_id, self.reason, self.id))


class Scanner:
    """Hands out the letters queued when it starts, acking none; what's left goes back on exit."""

    def __init__(self, amqp_url: str, queue: str, idle: float = IDLE_SECONDS) -> None:
        self.amqp_url = amqp_url
        self.queue = queue
        self.idle = idle
        self.depth = 0
        self._inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._consumer: tuple[AbstractQueue, str] | None = None

    async def __aenter__(self) -> Scanner:
        # A plain connection: after a drop a robust one would deliver the same letters again.
        try:
            self._connection = await aio_pika.connect(self.amqp_url, timeout=10)
        except Exception as exc:
            raise Unavailable(f"cannot reach RabbitMQ at {safe_url(self.amqp_url)}: {exc}") from exc
        self._channel = await self._connection.channel(publisher_confirms=False)
        try:
            queue = await self._channel.declare_queue(self.queue, passive=True)
        except aio_pika.exceptions.ChannelNotFoundEntity:
            await self._connection.close()
            raise Unavailable(
                f"there is no queue {self.queue} (has the service run with this EXPORTER_TOPOLOGY_PREFIX?)"
            ) from None
        self.depth = int(queue.declaration_result.message_count or 0)
        if self.depth:
            await self._channel.set_qos(prefetch_count=min(self.depth, MAX_PREFETCH))
            self._consumer = (queue, await queue.consume(self._take))
        return self

    async def _take(self, message: AbstractIncomingMessage) -> None:
        self._inbox.put_nowait(message)

    async def letters(self) -> AsyncIterator[DeadLetter]:
        """Up to the depth at start: later arrivals queue behind, so each letter comes once."""
        for _ in range(self.depth):
            try:
                message = await asyncio.wait_for(self._inbox.get(), self.idle)
            except TimeoutError:
                return  # another consumer holds the rest
            yield DeadLetter.of(message)

    async def __aexit__(self, *exc: object) -> None:
        if self._connection is None:
            return
        try:
            if self._consumer is not None and self._channel is not None:
                queue, tag = self._consumer
                await queue.cancel(tag)
                # Tag 0 with `multiple` nacks every unacked letter in one frame, which puts
                # them back in their order; if this fails, closing requeues them anyway.
                underlay = await self._channel.get_underlay_channel()
                await underlay.basic_nack(delivery_tag=0, multiple=True, requeue=True)
        finally:
            await self._connection.close()
            await asyncio.sleep(0.01)  # let aio-pika's close callbacks finish


def replays(message: AbstractIncomingMessage) -> int:
    """How often this message was replayed before."""
    value = (message.headers or {}).get(REPLAYS_HEADER)
    return value if isinstance(value, int) else 0


def _first_death(headers: dict[str, Any]) -> dict[str, Any]:
    deaths = headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
        return deaths[0]
    return {}


def _job_id(message: AbstractIncomingMessage) -> str:
    with contextlib.suppress(ValueError, UnicodeDecodeError):
        body = json.loads(message.body)
        if isinstance(body, dict) and isinstance(body.get("job_id"), str):
            return text(body["job_id"])[:64]
    return text(message.message_id or "-")[:64]


def text(value: object) -> str:
    """Header text, printable: control characters never reach the operator's terminal."""
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def safe_url(url: str) -> str:
    parsed = urlparse(url)
    return parsed._replace(netloc=parsed.hostname or "").geturl() if parsed.password else url


async def purge(settings: Settings, flt: Filter, confirm: Callable[[int], bool], out: TextIO) -> int:
    """Delete dead letters (all, or those matching `flt`) once `confirm(count)` agrees."""
    queue = Topology(settings.topology_prefix).dead
    async with Scanner(settings.amqp_url, queue) as scan:
        if not scan.depth:
            print(f"dlq: {queue} is empty; nothing to purge", file=out)
            return 0
        matched = [letter async for letter in scan.letters() if flt(letter)]
        if not matched:
            print(f"dlq: no dead letter in {queue} matches; nothing purged", file=out)
            return 1
        if not confirm(len(matched)):
            print("dlq: purge declined; nothing deleted", file=out)
            return 1
        for letter in matched:
            await letter.message.ack()
    print(f"dlq: purged {len(matched)} dead letter(s) from {queue}", file=out)
    return 0


async def listing(settings: Settings, flt: Filter, limit: int | None) -> tuple[int, list[DeadLetter]]:
    """(queue depth, matching letters), the letters all put back before this returns."""
    async with Scanner(settings.amqp_url, Topology(settings.topology_prefix).dead) as scan:
        found = []
        async for letter in scan.letters():
            if flt(letter):
                found.append(letter)
                if limit is not None and len(found) >= limit:
                    break
        return scan.depth, found
