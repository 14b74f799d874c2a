"""The RabbitMQ topology of DESIGN.md, under the test's prefix, declared idempotently."""

from __future__ import annotations

import subprocess

import aio_pika

from service.broker import Broker
from service.config import Settings
from service.messages import CALLBACK_HEADER, EVENT_KEYS, REQUESTED_KEY
from tests.support.rabbit import publish_raw, topology, wait_depth


def _listed(kind: str, *columns: str, prefix: str) -> dict[str, list[str]]:
    result = subprocess.run(
        ["rabbitmqctl", "-q", f"list_{kind}", "name", *columns], capture_output=True, text=True, timeout=60
    )
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    return {row[0]: row[1:] for row in rows if row[0] == prefix or row[0].startswith(prefix + ".")}


async def test_names_types_and_arguments_follow_the_design(settings: Settings) -> None:
    settings = settings.model_copy(update={"delivery_limit": 5})
    for _ in range(2):  # the API and every worker declare it; a second time changes nothing
        broker = Broker(settings)
        await broker.connect()
        await broker.close()
    p = settings.topology_prefix

    exchanges = _listed("exchanges", "type", "durable", prefix=p)
    assert exchanges == {
        **{name: ["topic", "true"] for name in (p, f"{p}.dlx", f"{p}.events")},
        f"{p}.callback-events": ["headers", "true"],
    }
    queues = _listed("queues", "type", "durable", "arguments", prefix=p)
    assert {f"{p}.dead", f"{p}.requests"} <= set(queues)
    assert queues[f"{p}.dead"][:2] == ["quorum", "true"]
    kind, durable, arguments = queues[f"{p}.requests"]
    assert (kind, durable) == ("quorum", "true")
    for expected in (
        f'{{"x-dead-letter-exchange","{p}.dlx"}}',
        '{"x-dead-letter-strategy","at-least-once"}',
        '{"x-delivery-limit",5}',
        '{"x-overflow","reject-publish"}',
    ):
        assert expected in arguments, arguments


async def test_requests_route_to_the_queue_and_anything_on_the_dlx_to_the_dlq(settings: Settings) -> None:
    broker = Broker(settings)
    await broker.connect()
    await broker.close()
    names = topology(settings)
    await publish_raw(settings.amqp_url, names.exchange, b"{}", REQUESTED_KEY)
    await publish_raw(settings.amqp_url, names.dlx, b"{}", "whatever.key")
    assert await wait_depth(settings.amqp_url, names.requests, 1) == 1
    assert await wait_depth(settings.amqp_url, names.dead, 1) == 1
    connection = await aio_pika.connect(settings.amqp_url)
    try:  # other routing keys on the main exchange reach no queue
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        exchange = await channel.get_exchange(names.exchange)
        try:
            await exchange.publish(aio_pika.Message(b"{}"), "export.other", mandatory=True)
        except aio_pika.exceptions.DeliveryError as exc:
            assert "NO_ROUTE" in str(exc)
        else:
            raise AssertionError("a message with another routing key was routed")
    finally:
        await connection.close()


async def test_only_events_of_jobs_with_a_callback_reach_the_callbacks_queue(settings: Settings) -> None:
    broker = Broker(settings)
    await broker.connect()
    await broker.close()
    names = topology(settings)
    for key in EVENT_KEYS:
        await publish_raw(settings.amqp_url, names.events, b"{}", key, headers={CALLBACK_HEADER: True})
    assert await wait_depth(settings.amqp_url, names.callbacks, 3) == 3
    # Nothing else is bound to this prefix's events exchange, so an event the headers
    # exchange keeps from the callbacks queue comes back unroutable.
    for headers in ({CALLBACK_HEADER: False}, {}):
        try:
            await publish_raw(settings.amqp_url, names.events, b"{}", "export.completed", headers=headers)
        except aio_pika.exceptions.DeliveryError as exc:
            assert "NO_ROUTE" in str(exc)
        else:
            raise AssertionError(f"an event with headers {headers} reached the callbacks queue")
    assert await wait_depth(settings.amqp_url, names.callbacks, 3) == 3
