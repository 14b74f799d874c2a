"""A test-only strategy that does nothing but hand in a tiny package (tool type `noop`), for
throughput benchmarks and broker tests where the work itself doesn't matter."""

from __future__ import annotations

import hashlib

from service.steps import Package, Step, StepContext, Strategy

CONTENT = b"noop\n"


async def _package(ctx: StepContext) -> None:
    ctx.package = Package(
        f"{ctx.job_id}/noop.txt", "noop.txt", "text/plain", len(CONTENT), hashlib.sha256(CONTENT).hexdigest()
    )


STRATEGIES = [
    Strategy(name="noop", tool_type="noop", format="package", steps=[Step("noop", "Nothing", _package)])
]
