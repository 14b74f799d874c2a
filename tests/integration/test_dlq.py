"""`exporter dlq` as an operator runs it: list, show, replay, purge, exit codes, and nothing
lost along the way, also with thousands of dead letters."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import aio_pika
import asyncpg

from service.broker import AT_HEADER, DELIVERIES_HEADER, DETAIL_HEADER, REASON_HEADER, Broker
from service.config import Settings
from service.dlq.replay import REPLAYED_AT_HEADER
from service.messages import REQUESTED_KEY
from tests.support.api import api_client
from tests.support.jobs import scripted, scripted_tool, submit, terminal_messages, wait_status
from tests.support.processes import REPO, settings_env
from tests.support.rabbit import drain, publish_raw, queue_depth, request_body, topology, wait_depth
from tests.support.scripted import read_journal
from tests.support.worker import worker_running


def dlq(settings: Settings, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service.cli", "dlq", *args],
        env=settings_env(settings),
        cwd=REPO,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def listed(settings: Settings, *args: str) -> list[dict[str, Any]]:
    result = dlq(settings, "list", "--json", *args)
    assert result.returncode == 0, result.stderr
    letters: list[dict[str, Any]] = json.loads(result.stdout)
    return letters


async def dead_letter(settings: Settings, letters: list[tuple[bytes, str, str]]) -> None:
    """Put (body, reason, message id) letters in the DLQ as a worker would, in this order."""
    broker = Broker(settings)  # declares the topology
    await broker.connect()
    await broker.close()
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        dlx = await channel.get_exchange(topology(settings).dlx)
        now = datetime.now(UTC).isoformat()
        for start in range(0, len(letters), 500):
            await asyncio.gather(
                *(
                    dlx.publish(
                        aio_pika.Message(
                            body,
                            message_id=message_id,
                            content_type="application/json",
                            headers={
                                REASON_HEADER: reason,
                                DETAIL_HEADER: f"why: {reason}",
                                AT_HEADER: now,
                                DELIVERIES_HEADER: 1,
                                "x-delivery-count": 0,
                            },
                        ),
                        REQUESTED_KEY,
                    )
                    for body, reason, message_id in letters[start : start + 500]
                )
            )
    finally:
        await connection.close()
        await asyncio.sleep(0.01)


def letters_for(count: int, reason: str) -> list[tuple[bytes, str, str]]:
    out = []
    for _ in range(count):
        job = uuid4()
        out.append((request_body(job, uuid4(), uuid4()), reason, str(job)))
    return out


async def test_list_shows_a_table_or_json_and_puts_every_letter_back(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    settings = scripted(settings)
    user, tool = await scripted_tool(pool, tmp_path / "journal")
    no_tool, no_user = uuid4(), uuid4()
    exchange = topology(settings).exchange
    async with worker_running(settings):  # real dead letters, made by a worker
        await publish_raw(settings.amqp_url, exchange, b"\x00 not json", message_id="garbage")
        await publish_raw(settings.amqp_url, exchange, request_body(no_tool, uuid4(), user))
        await publish_raw(settings.amqp_url, exchange, request_body(no_user, tool, uuid4()))
        assert await wait_depth(settings.amqp_url, topology(settings).dead, 3) == 3

    table = dlq(settings, "list")
    assert table.returncode == 0, table.stderr
    header, *rows, footer = table.stdout.splitlines()
    assert header.split() == ["ID", "DEAD-LETTERED", "AT", "JOB", "ID", "REASON", "DELIVERIES"]
    # The worker handles deliveries concurrently, so they may land in any order.
    assert sorted(row.split()[2:] for row in rows) == sorted(
        [
            ["garbage", "invalid_json", "1"],
            [str(no_tool), "unknown_tool", "1"],
            [str(no_user), "unknown_user", "1"],
        ]
    )
    assert footer == f"3 shown of 3 dead letter(s) in {topology(settings).dead}"

    first = listed(settings)
    reasons = {letter["reason"]: letter for letter in first}
    assert sorted(reasons) == ["invalid_json", "unknown_tool", "unknown_user"]
    assert reasons["unknown_tool"]["job_id"] == str(no_tool)
    assert reasons["unknown_tool"]["detail"].endswith("does not exist")
    assert [letter["job_id"] for letter in listed(settings, "--reason", "unknown_user")] == [str(no_user)]
    assert len(listed(settings, "--limit", "2")) == 2
    # Looking changes nothing: same letters, same order, same IDs.
    assert [letter["id"] for letter in listed(settings)] == [letter["id"] for letter in first]
    assert await queue_depth(settings.amqp_url, topology(settings).dead) == 3


def _stable(shown: str) -> list[str]:
    return [line for line in shown.splitlines() if "x-delivery-count" not in line]


async def test_show_prints_headers_and_body_by_id_or_job_id(settings: Settings) -> None:
    job = uuid4()
    await dead_letter(
        settings,
        [
            (request_body(job, uuid4(), uuid4()), "unknown_user", str(job)),
            (b"\x1b[2J evil", "invalid_json", "x"),
        ],
    )
    [good, evil] = listed(settings)

    by_id = dlq(settings, "show", good["id"])
    assert by_id.returncode == 0, by_id.stderr
    assert f"dead letter {good['id']}" in by_id.stdout
    assert "x-export-reason: unknown_user" in by_id.stdout
    assert f'"job_id": "{job}"' in by_id.stdout  # the body, pretty-printed
    # x-delivery-count goes up with every look, as the queue counts requeues; the rest is the same.
    assert _stable(dlq(settings, "show", str(job)).stdout) == _stable(by_id.stdout)

    shown = dlq(settings, "show", evil["id"])
    assert "\x1b" not in shown.stdout and "\\x1b[2J evil" in shown.stdout

    missing = dlq(settings, "show", "nope")
    assert missing.returncode == 1
    assert "no dead letter" in missing.stderr
    assert await queue_depth(settings.amqp_url, topology(settings).dead) == 2


async def test_replay_filters_limit_and_dry_run_and_leaves_the_rest_in_order(settings: Settings) -> None:
    await dead_letter(settings, letters_for(4, "unknown_tool") + letters_for(6, "delivery_limit"))
    before = listed(settings)
    queues = topology(settings)

    dry = dlq(settings, "replay", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.count("would replay") == 10 + 1  # ten lines and the summary
    assert "no job row yet: a worker creates it" in dry.stdout
    assert await queue_depth(settings.amqp_url, queues.requests) == 0

    some = dlq(settings, "replay", "--reason", "delivery_limit", "--limit", "3")
    assert some.returncode == 0, some.stderr
    assert "dlq: replayed 3 of 10 dead letter(s)" in some.stdout
    one = dlq(settings, "replay", "--job-id", before[1]["job_id"])
    assert one.returncode == 0 and "replayed 1 of 7" in one.stdout
    nothing = dlq(settings, "replay", "--reason", "no_such_reason")
    assert nothing.returncode == 1 and "replayed 0 of 6" in nothing.stdout

    replayed = [before[4], before[5], before[6], before[1]]
    assert [letter["id"] for letter in listed(settings)] == [
        letter["id"] for letter in before if letter not in replayed
    ]
    messages = await drain(settings.amqp_url, queues.requests)
    assert sorted(str(m.message_id) for m in messages) == sorted(letter["message_id"] for letter in replayed)
    for message in messages:
        headers = message.headers or {}
        assert REPLAYED_AT_HEADER in headers and headers["x-export-replays"] == 1
        assert not {REASON_HEADER, AT_HEADER, DELIVERIES_HEADER, "x-death"} & set(headers)
        assert json.loads(message.body)["job_id"] == message.message_id


async def test_replay_keeps_the_dead_letter_when_the_broker_refuses_the_copy(settings: Settings) -> None:
    await dead_letter(settings, letters_for(1, "unknown_tool"))
    queues = topology(settings)
    # A full request queue (max-length 0 by policy; the queue rejects publishes when full)
    # nacks the copy.
    policy = f"test-full-{settings.topology_prefix}"
    pattern = "^" + queues.requests.replace(".", "\\.") + "$"
    rabbitmqctl("set_policy", "--apply-to", "queues", policy, pattern, '{"max-length": 0}')
    accepted = 0
    try:
        await asyncio.sleep(0.5)
        # A quorum queue takes one message past its limit before it starts refusing.
        for _ in range(2):
            with contextlib.suppress(aio_pika.exceptions.DeliveryError):
                await publish_raw(settings.amqp_url, queues.exchange, b"filler")
                accepted += 1
        failed = dlq(settings, "replay")
        assert failed.returncode == 1, failed.stdout
        assert "kept" in failed.stdout and "replayed 0 of 1" in failed.stdout
        assert await queue_depth(settings.amqp_url, queues.dead) == 1
    finally:
        rabbitmqctl("clear_policy", policy)
    await asyncio.sleep(0.5)
    assert dlq(settings, "replay").returncode == 0
    assert await queue_depth(settings.amqp_url, queues.dead) == 0
    assert await queue_depth(settings.amqp_url, queues.requests) == accepted + 1


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=30)


async def test_replaying_a_completed_job_does_not_run_it_again(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    settings = scripted(settings)
    journal = tmp_path / "journal"
    user, tool = await scripted_tool(pool, journal)
    job = uuid4()
    body = request_body(job, tool, user)
    async with worker_running(settings):
        await publish_raw(settings.amqp_url, topology(settings).exchange, body, message_id=str(job))
        await wait_status(pool, job, {"completed"}, timeout=20)
        # A copy of its message ended in the DLQ (say, a duplicate that hit a broker limit).
        await dead_letter(settings, [(body, "delivery_limit", str(job))])
        replay = dlq(settings, "replay")
        assert replay.returncode == 0, replay.stdout + replay.stderr
        assert "job already completed: workers will drop it" in replay.stdout
        await wait_depth(settings.amqp_url, topology(settings).requests, 0)
        await asyncio.sleep(0.5)

    row = await wait_status(pool, job, timeout=1)
    assert (row["status"], row["attempt"]) == ("completed", 1)
    assert read_journal(journal) == ["run:s1", "run:s2", "run:s3", "run:s4"]
    assert await terminal_messages(pool, job) == ["export.completed"]
    assert await queue_depth(settings.amqp_url, topology(settings).dead) == 0
    assert await queue_depth(settings.amqp_url, topology(settings).requests) == 0


async def test_replay_resets_a_job_that_failed_because_it_was_dead_lettered(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    # A worker deployed without the strategy refuses the job (unsupported_format); once a
    # worker has it, the operator replays and the job runs as its next attempt.
    journal = tmp_path / "journal"
    user, tool = await scripted_tool(pool, journal)
    async with api_client(scripted(settings)) as client:
        job_id: UUID = await submit(client, scripted(settings), user, tool)
        async with worker_running(settings):
            row = await wait_status(pool, job_id, timeout=20)
        assert (row["status"], row["error_code"]) == ("failed", "unsupported_format")
        assert await wait_depth(settings.amqp_url, topology(settings).dead, 1) == 1

        async with worker_running(scripted(settings)):
            replay = dlq(scripted(settings), "replay")
            assert replay.returncode == 0, replay.stdout + replay.stderr
            assert "job failed (unsupported_format): reset to attempt 2" in replay.stdout
            row = await wait_status(pool, job_id, {"completed"}, timeout=20)

    assert row["attempt"] == 2
    assert read_journal(journal) == ["run:s1", "run:s2", "run:s3", "run:s4"]
    kinds = await pool.fetch("SELECT kind FROM export_job_events WHERE job_id = $1 ORDER BY event_id", job_id)
    assert "replayed" in [r["kind"] for r in kinds]
    assert await terminal_messages(pool, job_id) == ["export.failed", "export.completed"]
    assert await queue_depth(settings.amqp_url, topology(settings).dead) == 0


async def test_purge_asks_first_and_can_be_narrowed(settings: Settings) -> None:
    await dead_letter(settings, letters_for(2, "unknown_tool") + letters_for(3, "invalid_json"))
    dead = topology(settings).dead

    declined = dlq(settings, "purge", stdin="n\n")
    assert declined.returncode == 1
    assert "Delete 5 dead letter(s)" in declined.stdout and "nothing deleted" in declined.stdout
    assert await queue_depth(settings.amqp_url, dead) == 5

    narrowed = dlq(settings, "purge", "--reason", "unknown_tool", "--yes")
    assert narrowed.returncode == 0 and "purged 2 dead letter(s)" in narrowed.stdout
    assert [letter["reason"] for letter in listed(settings)] == ["invalid_json"] * 3

    confirmed = dlq(settings, "purge", stdin="y\n")
    assert confirmed.returncode == 0 and "purged 3" in confirmed.stdout
    assert await queue_depth(settings.amqp_url, dead) == 0
    empty = dlq(settings, "purge", "--yes")
    assert empty.returncode == 0 and "is empty" in empty.stdout


async def test_thousands_of_dead_letters(settings: Settings) -> None:
    await dead_letter(settings, letters_for(1500, "unknown_tool") + letters_for(1500, "delivery_limit"))
    queues = topology(settings)
    assert await wait_depth(settings.amqp_url, queues.dead, 3000) == 3000

    began = time.monotonic()
    assert len(listed(settings)) == 3000
    assert time.monotonic() - began < 30

    replay = dlq(settings, "replay", "--reason", "delivery_limit", "--limit", "1000")
    assert replay.returncode == 0, replay.stderr
    assert "replayed 1000 of 3000" in replay.stdout
    assert await wait_depth(settings.amqp_url, queues.requests, 1000) == 1000
    left = listed(settings)
    assert len(left) == 2000
    assert sum(1 for letter in left if letter["reason"] == "delivery_limit") == 500
    assert dlq(settings, "purge", "--yes").returncode == 0
    assert await queue_depth(settings.amqp_url, queues.dead) == 0


def test_an_unreachable_broker_exits_2_without_showing_the_password(settings: Settings) -> None:
    unreachable = settings.model_copy(update={"amqp_url": "amqp://guest:s3cret@127.0.0.1:1/"})
    result = dlq(unreachable, "list")
    assert result.returncode == 2
    assert "cannot reach RabbitMQ" in result.stderr and "s3cret" not in result.stderr


def test_a_prefix_without_a_topology_exits_2_saying_so(settings: Settings) -> None:
    result = dlq(settings.model_copy(update={"topology_prefix": "nothing-here"}), "list")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "dlq: there is no queue nothing-here.dead (has the service run with this EXPORTER_TOPOLOGY_PREFIX?)"
    )
