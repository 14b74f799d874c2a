"""`exporter`: every command of the service, for operators and for clients."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence

from service import callbacks, cleanup, client, dlq
from service.config import Settings, SettingsError, load_settings
from service.logs import configure

__all__ = ["main"]

Handler = Callable[[argparse.Namespace, Settings], int | None]


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    from service import migrations
    from service.db import connect, ensure_database

    async def go() -> int:
        if args.action == "up" and await ensure_database(settings):
            print("migrate: created the database")
        conn = await connect(settings)
        try:
            if args.action == "up":
                done = await migrations.up(conn)
                if not done:
                    print("migrate: nothing to apply; the database is up to date")
                for m in done:
                    print(f"migrate: applied {m.version}_{m.name}")
            elif args.action == "down":
                reverted = await migrations.down(conn)
                print(
                    f"migrate: reverted {reverted.version}_{reverted.name}"
                    if reverted
                    else "migrate: nothing to revert"
                )
            else:
                for m, is_applied in await migrations.status(conn):
                    print(f"{'applied' if is_applied else 'pending':8} {m.version}_{m.name}")
            return 0
        finally:
            await conn.close()

    return asyncio.run(go())


def _api(args: argparse.Namespace, settings: Settings) -> int:
    from service.runner import run_api

    asyncio.run(run_api(settings, with_relay=not args.no_relay))
    return 0


def _worker(args: argparse.Namespace, settings: Settings) -> int:
    from service.runner import run_worker

    asyncio.run(run_worker(settings))
    return 0


def _relay(args: argparse.Namespace, settings: Settings) -> int:
    from service.runner import run_relay

    asyncio.run(run_relay(settings))
    return 0


def _run(args: argparse.Namespace, settings: Settings) -> int:
    from service.runner import run_all

    return run_all(settings, args.workers)


def _token(args: argparse.Namespace, settings: Settings) -> int:
    from service.seed import token_for

    token = asyncio.run(token_for(settings, args.email, args.ttl))
    if token is None:
        print(f"token: no user with email {args.email!r} (run `exporter seed`)", file=sys.stderr)
        return 2
    print(token)
    return 0


def _seed(args: argparse.Namespace, settings: Settings) -> int:
    from service.seed import seed

    asyncio.run(seed(settings, records=args.records))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="exporter", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(handler=handler)
        return p

    p = add("api", _api, "serve the HTTP API (and the outbox relay)")
    p.add_argument("--no-relay", action="store_true", help="don't publish the outbox from this process")
    add("worker", _worker, "consume export requests and run them")
    add("relay", _relay, "publish the outbox to RabbitMQ (standalone)")
    p = add("run", _run, "API + relay + workers in one foreground command")
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    p = add("migrate", _migrate, "apply or revert database migrations")
    p.add_argument("action", choices=("up", "down", "status"))
    p = add("seed", _seed, "create demo users and tools (idempotent)")
    p.add_argument("--records", type=int, default=500, help="records per tool (default 500)")
    p = add("token", _token, "print a JWT for a user, for local use")
    p.add_argument("email")
    p.add_argument("--ttl", type=int, default=24 * 3600, help="lifetime in seconds")
    # Command groups live next to what they operate on.
    for module in (dlq, cleanup, client, callbacks):
        module.register_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"exporter: invalid setting: {exc}", file=sys.stderr)
        return 2
    configure(settings.log_level)
    try:
        return int(args.handler(args, settings) or 0)
    except SettingsError as exc:
        print(f"exporter: invalid setting: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
