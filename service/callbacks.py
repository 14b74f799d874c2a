"""Callbacks: the terminal state of a job POSTed once to the `callback_url` its client gave.

The API keeps `callback_url` in the job's options but never puts it in the request message,
so strategies never see it. A sender consumes the terminal events (`export.completed`,
`export.failed`, `export.cancelled`) of jobs with a callback from the events exchange through
its own queue (`<prefix>.callbacks`, fed by a headers exchange that lets through only events
marked with CALLBACK_HEADER), and POSTs the job's final state signed with HMAC-SHA256. Every
terminal event passes through the outbox, whichever process ended the job (orchestrator,
reaper, poison path, API cancel), so this one consumer sees them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import json
import logging
import signal
import socket
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID

import asyncpg
import httpx
from aio_pika.abc import AbstractIncomingMessage
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

from service import jobs
from service.broker import Broker
from service.config import Settings
from service.errors import InvalidInput
from service.messages import CALLBACK_OPTION, job_event

__all__ = [
    "CALLBACK_OPTION",
    "SIGNATURE_HEADER",
    "CallbackSender",
    "deliver",
    "sign",
    "split_options",
    "strategy_options",
    "verify",
]

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Export-Signature"
EVENT_HEADER = "X-Export-Event"
DELIVERY_HEADER = "X-Export-Delivery"
MAX_URL_LENGTH = 2000


class CallbackRefused(Exception):
    """The receiver answered in a way that retrying cannot change (a 4xx other than 408/429)."""


# -- the API side: options ----------------------------------------------------------------


def validate_url(value: object) -> str:
    """An absolute http(s) URL without credentials, or InvalidInput."""
    if not isinstance(value, str) or not value or len(value) > MAX_URL_LENGTH:
        raise InvalidInput("options.callback_url: must be an http(s) URL", code="invalid_callback_url")
    try:
        parts = urlsplit(value)
        port = parts.port  # raises on a malformed port
    except ValueError:
        raise InvalidInput("options.callback_url: not a valid URL", code="invalid_callback_url") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or port == 0:
        raise InvalidInput("options.callback_url: must be an http(s) URL", code="invalid_callback_url")
    if parts.username is not None or parts.password is not None:
        # Credentials would be stored in the job and echoed in its options.
        raise InvalidInput("options.callback_url: must not carry credentials", code="invalid_callback_url")
    if any(c.isspace() or ord(c) < 32 for c in value):
        raise InvalidInput("options.callback_url: not a valid URL", code="invalid_callback_url")
    return value


def split_options(options: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """(the strategy's own options, the validated callback URL or None)."""
    rest = {k: v for k, v in options.items() if k != CALLBACK_OPTION}
    if CALLBACK_OPTION not in options or options[CALLBACK_OPTION] is None:
        return rest, None
    return rest, validate_url(options[CALLBACK_OPTION])


def strategy_options(options: dict[str, Any]) -> dict[str, Any]:
    """A job's options without the callback URL: what a strategy validates and runs with."""
    return {k: v for k, v in options.items() if k != CALLBACK_OPTION}


# -- signing --------------------------------------------------------------------------------


def signing_key(settings: Settings) -> bytes:
    """EXPORTER_CALLBACK_SECRET when configured, else a key derived from the JWT secret.

    Derived with a label of its own, so a callback signature can never stand in for a token
    or a download URL signature.
    """
    secret = getattr(settings, "callback_secret", "") or settings.jwt_secret
    return hmac.new(secret.encode(), b"exporter/callback/v1", hashlib.sha256).digest()


def sign(key: bytes, body: bytes) -> str:
    """The X-Export-Signature value: `sha256=` and the hex HMAC of the exact body."""
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def verify(key: bytes, body: bytes, header: str | None) -> bool:
    """What a receiver does: recompute and compare in constant time."""
    return bool(header) and hmac.compare_digest(sign(key, body), str(header))


# -- delivery -------------------------------------------------------------------------------


def payload(row: asyncpg.Record) -> dict[str, Any]:
    """The body POSTed to the callback URL: the terminal event, plus what a person reads."""
    routing_key, delivery_id, event, _ = job_event(row)
    return {
        **event,
        "event": routing_key,
        "delivery_id": delivery_id,
        "package_sha256": event["package_sha256"].strip() if event["package_sha256"] else None,
        "error_message": row["error_message"],
        "sent_at": datetime.now(UTC).isoformat(),
    }


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, httpx.TransportError | httpx.HTTPStatusError)


async def _refuse_metadata_address(url: str) -> None:
    """Never POST to link-local addresses (cloud metadata services live there)."""
    host = urlsplit(url).hostname or ""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return  # the POST itself reports the failure, and is retried
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if address.is_link_local or address.is_multicast or address.is_unspecified:
            raise CallbackRefused(f"callback host {host} resolves to a forbidden address {address}")


async def deliver(
    client: httpx.AsyncClient,
    key: bytes,
    url: str,
    body: dict[str, Any],
    *,
    attempts: int = 6,
    backoff: float = 1.0,
) -> int:
    """POST `body` signed; retry transport errors, 5xx, 408 and 429 with exponential backoff.

    Returns the receiver's status; raises CallbackRefused or the last error when giving up.
    """
    await _refuse_metadata_address(url)
    raw = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign(key, raw),
        EVENT_HEADER: str(body["event"]),
        DELIVERY_HEADER: str(body["delivery_id"]),
    }
    retrying = AsyncRetrying(
        stop=stop_after_attempt(attempts),
        wait=wait_exponential(multiplier=backoff, max=60),
        retry=retry_if_exception(_retryable),
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            response = await client.post(url, content=raw, headers=headers)
            if response.status_code >= 500 or response.status_code in (408, 429):
                response.raise_for_status()
            if response.status_code >= 400:
                raise CallbackRefused(f"callback answered {response.status_code}")
            return response.status_code
    raise AssertionError("unreachable")  # pragma: no cover


class CallbackSender:
    """Consumes terminal events and delivers each job's callback once per terminal status."""

    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        broker: Broker,
        *,
        attempts: int = 6,
        backoff: float = 1.0,
        timeout: float = 10.0,
        concurrency: int = 8,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.broker = broker
        self.key = signing_key(settings)
        self.attempts = attempts
        self.backoff = backoff
        self.timeout = timeout
        self.concurrency = concurrency
        self.queue_name = broker.topology.callbacks
        self.ready = asyncio.Event()  # set once the queue is bound and consumed

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set; deliveries in flight finish first."""
        assert self.broker.connection is not None, "connect the broker first"
        channel = await self.broker.connection.channel()
        await channel.set_qos(prefetch_count=self.concurrency)
        # Broker.declare made the queue and its bindings when the broker connected.
        queue = await channel.declare_queue(
            self.queue_name, durable=True, arguments={"x-queue-type": "quorum"}
        )
        async with httpx.AsyncClient(timeout=self.timeout, follow_redirects=False) as client:
            self._client = client
            tag = await queue.consume(self._on_message)
            self.ready.set()
            try:
                await stop.wait()
            finally:
                with contextlib.suppress(Exception):
                    await queue.cancel(tag)
                with contextlib.suppress(Exception):
                    await channel.close()

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        try:
            event = json.loads(message.body)
            await self.handle(UUID(event["job_id"]), int(event["attempt"]), str(event["status"]))
        except (ValueError, KeyError, TypeError) as exc:
            log.error("callbacks: unreadable event dropped", extra={"error": str(exc)})
            await message.ack()
            return
        except Exception:
            log.exception("callbacks: event not handled; requeued")
            with contextlib.suppress(Exception):
                await message.nack(requeue=True)
            await asyncio.sleep(1)  # don't spin on a database outage
            return
        await message.ack()

    async def handle(self, job_id: UUID, attempt: int, status: str) -> str:
        """Deliver the callback for this terminal status if one is due; returns what happened."""
        row = await jobs.get_job(self.pool, job_id)
        if row is None or row["attempt"] != attempt:
            return "stale"  # retried or removed since: the newer attempt has its own event
        url = (row["options"] or {}).get(CALLBACK_OPTION)
        if not url:
            return "none"
        if await self.pool.fetchval(jobs.CALLBACK_DONE, job_id, str(attempt), status) is not None:
            return "duplicate"
        # The row's current status may already be past the event's (failed → rolled_back): the
        # callback reports the state as it is now, under the event's status for deduplication.
        body = payload(row)
        try:
            code = await deliver(
                self._client, self.key, url, body, attempts=self.attempts, backoff=self.backoff
            )
        except Exception as exc:
            log.warning("callback failed", extra={"job_id": str(job_id), "error": str(exc)})
            await jobs.add_event(
                self.pool, job_id, "callback_failed", attempt=attempt, status=status, error=str(exc)[:500]
            )
            return "failed"
        await jobs.add_event(
            self.pool, job_id, "callback_delivered", attempt=attempt, status=status, http_status=code
        )
        return "delivered"


async def run_sender(settings: Settings, pool: asyncpg.Pool, broker: Broker, stop: asyncio.Event) -> None:
    """A side task for a long-running process (worker or API): deliver callbacks until stopped."""
    await CallbackSender(settings, pool, broker).run(stop)


async def serve(settings: Settings) -> None:
    """`exporter callbacks`: the sender as a process of its own, stopped by SIGTERM/SIGINT."""
    from service.db import create_pool
    from service.runner import connect_broker

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    pool = await create_pool(settings, max_size=4)
    try:
        broker = await connect_broker(settings, stop)
        if broker is not None:
            try:
                await run_sender(settings, pool, broker, stop)
            finally:
                await broker.close()
    finally:
        await pool.close()


def register_commands(sub: Any) -> None:
    """`exporter callbacks` (the CLI loads this when service.callbacks is in its plugin list)."""
    text = "deliver job callbacks: consume terminal events and POST them, signed"
    parser = sub.add_parser("callbacks", help=text, description=text)
    parser.set_defaults(handler=lambda args, settings: asyncio.run(serve(settings)) or 0)
