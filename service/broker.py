"""RabbitMQ: the topology of DESIGN.md, confirmed publishing, and dead-lettering with a reason."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from datetime import UTC, datetime
from typing import Any

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)

from service.config import Settings
from service.messages import CALLBACK_HEADER, EVENT_KEYS, REQUESTED_KEY, Topology

__all__ = ["AT_HEADER", "DELIVERIES_HEADER", "DETAIL_HEADER", "REASON_HEADER", "Broker"]

log = logging.getLogger(__name__)

REASON_HEADER = "x-export-reason"
DETAIL_HEADER = "x-export-detail"
AT_HEADER = "x-export-dead-lettered-at"
# The dead-letter queue sets x-delivery-count on its own deliveries, so the count the
# request queue had is kept under a name of ours.
DELIVERIES_HEADER = "x-export-deliveries"


def request_queue_arguments(settings: Settings, topology: Topology) -> dict[str, Any]:
    # Past the delivery limit a quorum queue drops a message unless it has a dead-letter
    # exchange, so the two always go together; at-least-once needs reject-publish.
    return {
        "x-queue-type": "quorum",
        "x-delivery-limit": settings.delivery_limit,
        "x-dead-letter-exchange": topology.dlx,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


class Broker:
    """One robust connection, a confirming channel and the declared exchanges."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topology = Topology(settings.topology_prefix)
        self.connection: AbstractRobustConnection | None = None
        self.channel: AbstractChannel | None = None
        self.exchanges: dict[str, AbstractExchange] = {}

    async def connect(self, timeout: float = 10) -> None:
        """Connect and declare the topology (idempotent); reconnects happen on their own."""
        self.connection = await aio_pika.connect_robust(
            self.settings.amqp_url,
            timeout=timeout,
            client_properties={"connection_name": f"exporter:{self.topology.exchange}"},
        )
        self.channel = await self.connection.channel(publisher_confirms=True, on_return_raises=True)
        await self.declare(self.channel)

    async def connect_until(self, stop: asyncio.Event, timeout: float = 10) -> bool:
        """Connect, retrying with backoff while the broker is down; False if stopped first."""
        delay = 0.5
        while not stop.is_set():
            try:
                await self.connect(timeout=timeout)
                return True
            except Exception as exc:
                log.warning("broker unavailable; retrying", extra={"error": str(exc)})
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                delay = min(delay * 2, 10)
        return False

    async def declare(self, channel: AbstractChannel) -> None:
        t = self.topology
        exchange = await channel.declare_exchange(t.exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        dlx = await channel.declare_exchange(t.dlx, aio_pika.ExchangeType.TOPIC, durable=True)
        events = await channel.declare_exchange(t.events, aio_pika.ExchangeType.TOPIC, durable=True)
        requests = await self.request_queue(channel)
        await requests.bind(exchange, REQUESTED_KEY)
        dead = await channel.declare_queue(t.dead, durable=True, arguments={"x-queue-type": "quorum"})
        await dead.bind(dlx, "#")
        # Declared with the topology so no terminal event is missed before a sender starts.
        callbacks = await channel.declare_queue(
            t.callbacks, durable=True, arguments={"x-queue-type": "quorum"}
        )
        wanted = await channel.declare_exchange(
            t.callback_events, aio_pika.ExchangeType.HEADERS, durable=True
        )
        for key in EVENT_KEYS:
            await wanted.bind(events, key)
            # Before the headers exchange, the queue took every event: unbinding a binding
            # that doesn't exist is a no-op, so this is safe to repeat.
            await callbacks.unbind(events, key)
        await callbacks.bind(wanted, arguments={"x-match": "all", CALLBACK_HEADER: True})
        self.exchanges = {"requests": exchange, "dlx": dlx, "events": events}

    async def request_queue(self, channel: AbstractChannel) -> AbstractQueue:
        """Declare the request queue on `channel`; a robust channel restores it and its consumers."""
        return await channel.declare_queue(
            self.topology.requests,
            durable=True,
            arguments=request_queue_arguments(self.settings, self.topology),
        )

    @property
    def is_connected(self) -> bool:
        return bool(self.connection and not self.connection.is_closed and self.connection.connected.is_set())

    async def publish(
        self,
        target: str,
        routing_key: str,
        body: bytes | dict[str, Any],
        *,
        message_id: str,
        headers: dict[str, Any] | None = None,
        timeout: float = 10,
    ) -> None:
        """Publish persistently; returns once the broker confirmed it.

        Requests and dead letters go out with `mandatory`: a message no queue takes is a
        failure. Events may legitimately have no subscriber, so they don't.
        Raises when the broker nacks, returns the message as unroutable, or is unreachable.
        """
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        message = aio_pika.Message(
            payload,
            message_id=message_id,
            correlation_id=message_id,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            headers=headers or {},
            timestamp=datetime.now(UTC),
        )
        await self.exchanges[target].publish(
            message, routing_key, mandatory=target != "events", timeout=timeout
        )

    async def dead_letter(self, delivery: AbstractIncomingMessage, reason: str, detail: str) -> None:
        """Copy a delivery to the DLQ with why, confirmed, so the caller can then ack it."""
        headers = dict(delivery.headers or {})
        headers.update(
            {
                REASON_HEADER: reason,
                DETAIL_HEADER: detail[:1000],
                AT_HEADER: datetime.now(UTC).isoformat(),
                DELIVERIES_HEADER: _delivery_count(headers) + 1,
                "x-export-original-routing-key": delivery.routing_key or REQUESTED_KEY,
            }
        )
        await self.publish(
            "dlx",
            delivery.routing_key or REQUESTED_KEY,
            delivery.body,
            message_id=delivery.message_id or "",
            headers=headers,
        )

    async def queue_depths(self) -> dict[str, int]:
        """Ready messages in the request and dead-letter queues (passive declares)."""
        assert self.connection is not None
        depths = {}
        async with self.connection.channel() as channel:
            for name in (self.topology.requests, self.topology.dead):
                queue = await channel.declare_queue(name, passive=True)
                depths[name] = int(queue.declaration_result.message_count or 0)
        return depths

    async def close(self) -> None:
        if self.connection is not None:
            await self.connection.close()
            self.connection = None
            # aio-pika finishes close callbacks in tasks of their own; let them run.
            await asyncio.sleep(0.01)


def _delivery_count(headers: dict[str, Any]) -> int:
    """Earlier deliveries of this message, as the quorum queue counted them."""
    try:
        return int(headers.get("x-delivery-count") or 0)
    except (TypeError, ValueError):
        return 0
