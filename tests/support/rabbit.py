"""RabbitMQ for broker tests: raw publishes, an events tap, queue depths, and two kinds of outage.

Outages touch only the test's own connections, never the other tests sharing the broker:
`close_connections` closes those named `exporter:<prefix>` (what `rabbitmqctl
close_all_connections` does to everyone), and `BrokerProxy` stands between the service and
RabbitMQ so that a test can take "the broker" down and bring it back (a stop_app/start_app
seen from the service, without stopping the shared node).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from service.config import Settings
from service.messages import REQUESTED_KEY, Topology

# Closes the connections whose client-provided name is exactly NAME; prints how many.
_CLOSE_SCRIPT = """
Match = fun(P) ->
    case catch rabbit_reader:info(P, [client_properties]) of
        [{client_properties, CP}] ->
            case lists:keyfind(<<"connection_name">>, 1, CP) of
                {_, longstr, Name} -> Name =:= <<"NAME">>;
                _ -> false
            end;
        _ -> false
    end
end,
Ours = [P || P <- rabbit_networking:connections(), Match(P)],
[rabbit_networking:close_connection(P, "closed by a test") || P <- Ours],
length(Ours).
"""


def close_connections(settings: Settings) -> int:
    """Close every connection the service opened for this test's prefix; returns how many."""
    name = f"exporter:{settings.topology_prefix}"
    result = subprocess.run(
        ["rabbitmqctl", "eval", _CLOSE_SCRIPT.replace("NAME", name)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return int(result.stdout.strip() or 0)


async def publish_raw(
    amqp_url: str, exchange: str, body: bytes, routing_key: str = REQUESTED_KEY, **properties: Any
) -> None:
    """Publish as another service would, confirmed and mandatory."""
    connection = await aio_pika.connect(amqp_url, timeout=10)
    try:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        target = await channel.get_exchange(exchange)
        message = aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT, **properties)
        await target.publish(message, routing_key, mandatory=True)
    finally:
        await connection.close()
        await asyncio.sleep(0.01)


def request_body(job: Any, tool: Any, user: Any, **changes: Any) -> bytes:
    """A valid export.requested.v1 body, with `changes` applied."""
    body = {
        "schema": "export.requested.v1",
        "job_id": str(job),
        "tool_id": str(tool),
        "user_id": str(user),
        "format": "package",
        "options": {},
        "attempt": 1,
        "requested_at": "2026-01-01T00:00:00Z",
        **changes,
    }
    return json.dumps(body).encode()


async def queue_depth(amqp_url: str, queue: str) -> int:
    """Ready messages in `queue`."""
    connection = await aio_pika.connect(amqp_url, timeout=10)
    try:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        return int(declared.declaration_result.message_count or 0)
    finally:
        await connection.close()
        await asyncio.sleep(0.01)


async def wait_depth(amqp_url: str, queue: str, expected: int, timeout: float = 15) -> int:
    """Wait until `queue` holds `expected` ready messages; returns the last depth seen."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    depth = await queue_depth(amqp_url, queue)
    while depth != expected and loop.time() < deadline:
        await asyncio.sleep(0.1)
        depth = await queue_depth(amqp_url, queue)
    return depth


@dataclass
class Tap:
    """Messages seen on an exchange, in arrival order."""

    messages: list[AbstractIncomingMessage] = field(default_factory=list)

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(m.body) for m in self.messages]


@asynccontextmanager
async def tap(amqp_url: str, exchange: str, routing_key: str = "#") -> AsyncIterator[Tap]:
    """Bind a private queue to `exchange` and collect what arrives, on a connection of its own."""
    seen = Tap()
    connection = await aio_pika.connect(amqp_url, timeout=10)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue("", exclusive=True)
        await queue.bind(exchange, routing_key)

        async def take(message: AbstractIncomingMessage) -> None:
            seen.messages.append(message)
            await message.ack()

        await queue.consume(take)
        yield seen
    finally:
        await connection.close()
        await asyncio.sleep(0.01)


async def drain(amqp_url: str, queue: str) -> list[AbstractIncomingMessage]:
    """Take (and ack) every ready message of `queue`."""
    connection = await aio_pika.connect(amqp_url, timeout=10)
    taken = []
    try:
        channel = await connection.channel()
        source = await channel.get_queue(queue)
        while (message := await source.get(no_ack=True, fail=False)) is not None:
            taken.append(message)
    finally:
        await connection.close()
        await asyncio.sleep(0.01)
    return taken


def topology(settings: Settings) -> Topology:
    return Topology(settings.topology_prefix)


class BrokerProxy:
    """A TCP proxy to RabbitMQ in a thread of its own (so blocking test code can't stall it).

    `down()` cuts every proxied connection and refuses new ones; `up()` accepts again on the
    same port. Point the service at `url`.
    """

    def __init__(self, amqp_url: str) -> None:
        parsed = urlparse(amqp_url)
        self.target = (parsed.hostname or "127.0.0.1", parsed.port or 5672)
        self._amqp = parsed
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    @property
    def url(self) -> str:
        netloc = f"{self._amqp.username}:{self._amqp.password}@127.0.0.1:{self.port}"
        return self._amqp._replace(netloc=netloc).geturl()

    def __enter__(self) -> BrokerProxy:
        self._thread.start()
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def up(self) -> None:
        self._call(self._start())

    def down(self) -> None:
        self._call(self._stop())

    def _call(self, coro: Any) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.transport.abort()
            return
        self._writers |= {client_writer, server_writer}
        await asyncio.gather(
            _pipe(client_reader, server_writer, self._writers),
            _pipe(server_reader, client_writer, self._writers),
        )


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, writers: set[Any]) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writers.discard(writer)
        with contextlib.suppress(Exception):
            writer.transport.abort()
