"""`exporter dlq list|show|replay|purge`: look into the dead-letter queue and act on it.

Every command reads the queue through one consumer that acks only what it acts on; the rest
is nacked back (requeued, in order) when it finishes, and the broker requeues it as well if
the command dies, so looking never loses a message. Quorum queues count each requeue as a
delivery; the dead-letter queue has no delivery limit, so that is harmless.

Replay republishes the original body to the exchange (routing key export.requested) with
`x-export-replayed-at`, and acks the dead letter only once the broker confirmed the copy.
A job that failed *because* its message was dead-lettered (its error_code is the dead
letter's reason, same attempt) is reset the way POST /retry resets it (attempt + 1): the
reset and the new message are one transaction through the outbox. Any other job is left
alone; workers drop messages for finished jobs, so a replay never runs a completed job again.

Exit codes: 0 done; 1 nothing matched, a message was not replayed, or purge was declined;
2 RabbitMQ or PostgreSQL could not be reached, or the dead-letter queue does not exist.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from typing import Any

from service.config import Settings
from service.dlq.letters import DeadLetter, Filter, Unavailable, listing, purge, text
from service.dlq.replay import replay
from service.messages import Topology

__all__ = ["register_commands"]


def register_commands(subparsers: Any) -> None:
    """Add `exporter dlq …` to the CLI."""
    dlq = subparsers.add_parser(
        "dlq",
        help="inspect, replay and purge dead letters",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = dlq.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")

    def add(name: str, handler: Callable[[argparse.Namespace, Settings], int], text: str) -> Any:
        parser = commands.add_parser(name, help=text, description=text)
        parser.set_defaults(handler=handler)
        return parser

    def filters(parser: Any) -> None:
        parser.add_argument("--job-id", help="only the dead letters of this job")
        parser.add_argument("--reason", help="only dead letters with this reason (e.g. delivery_limit)")

    p = add("list", _list, "list dead letters: when, job id, reason, delivery count")
    filters(p)
    p.add_argument("--limit", type=_positive, help="show at most N")
    p.add_argument("--json", action="store_true", help="one JSON array instead of a table")
    p = add("show", _show, "print the headers and body of a dead letter")
    p.add_argument("id", help="a dead letter's ID (from `list`) or a job id")
    p = add("replay", _replay, "republish dead letters to the exchange, then remove them")
    filters(p)
    p.add_argument("--limit", type=_positive, help="replay at most N")
    p.add_argument("--dry-run", action="store_true", help="say what would be replayed; change nothing")
    p = add("purge", _purge, "delete dead letters for good (asks first)")
    filters(p)
    p.add_argument("--yes", action="store_true", help="don't ask for confirmation")


def _positive(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _filter(args: argparse.Namespace) -> Filter:
    return Filter(job_id=getattr(args, "job_id", None), reason=getattr(args, "reason", None))


def _run(action: Callable[[], Any]) -> int:
    try:
        return int(asyncio.run(action()))
    except Unavailable as exc:
        print(f"dlq: {exc}", file=sys.stderr)
        return 2


def _list(args: argparse.Namespace, settings: Settings) -> int:
    async def go() -> int:
        depth, letters = await listing(settings, _filter(args), args.limit)
        if args.json:
            print(json.dumps([letter.summary() for letter in letters], indent=2))
            return 0
        queue = Topology(settings.topology_prefix).dead
        if not letters:
            print(f"no dead letters in {queue}" + (" match" if depth else ""))
            return 0
        print(f"{'ID':12}  {'DEAD-LETTERED AT':32}  {'JOB ID':36}  {'REASON':20}  DELIVERIES")
        for letter in letters:
            count = "-" if letter.deliveries is None else str(letter.deliveries)
            print(
                f"{letter.id:12}  {letter.dead_lettered_at:32}  {letter.job_id:36}  {letter.reason:20}  {count}"
            )
        print(f"{len(letters)} shown of {depth} dead letter(s) in {queue}")
        return 0

    return _run(go)


def _show(args: argparse.Namespace, settings: Settings) -> int:
    async def go() -> int:
        _, letters = await listing(settings, Filter(id=args.id), None)
        if not letters:
            print(f"dlq: no dead letter with ID or job id {args.id!r}", file=sys.stderr)
            return 1
        for letter in letters:
            print(_describe(letter))
        return 0

    return _run(go)


def _describe(letter: DeadLetter) -> str:
    lines = [f"dead letter {letter.id}"]
    lines += [f"  {k + ':':18} {v}" for k, v in letter.summary().items() if k != "id"]
    lines.append("headers:")
    for name, value in sorted((letter.message.headers or {}).items()):
        shown = json.dumps(value, default=str) if isinstance(value, list | dict) else value
        lines.append(f"  {text(name)}: {text(shown)}")
    body = letter.message.body
    lines.append(f"body ({letter.message.content_type or 'no content type'}, {len(body)} bytes):")
    try:
        lines.append(json.dumps(json.loads(body), indent=2, ensure_ascii=True))
    except (ValueError, UnicodeDecodeError):
        lines.append(text(body))
    return "\n".join(lines) + "\n"


def _replay(args: argparse.Namespace, settings: Settings) -> int:
    return _run(lambda: replay(settings, _filter(args), args.limit, args.dry_run, sys.stdout))


def _purge(args: argparse.Namespace, settings: Settings) -> int:
    def confirm(count: int) -> bool:
        if args.yes:
            return True
        queue = Topology(settings.topology_prefix).dead
        print(f"Delete {count} dead letter(s) from {queue} for good? [y/N] ", end="", flush=True)
        answer = sys.stdin.readline().strip().lower()
        return answer in ("y", "yes")

    return _run(lambda: purge(settings, _filter(args), confirm, sys.stdout))
