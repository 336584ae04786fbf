# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Many simulated phones at once against one CAPF service, with progress and a summary."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from .client import EnrolResult, Target, enrol


async def run_fleet(identities, target, *, concurrency: int = 100, progress=None, **enrol_options) -> dict:
    """Enrol every identity, at most ``concurrency`` at a time; ``progress(done, total, result)``.
    ``target``: one ``Target`` for every phone, or a list of them, phone i taking the (i mod n)-th, as
    the phones of a cluster are given its CAPF nodes in different orders to spread them."""
    targets = [target] if isinstance(target, Target) else list(target)
    limit = asyncio.Semaphore(concurrency)
    total = len(identities)
    results: list[EnrolResult] = []
    started = time.monotonic()

    async def one(index, identity):
        async with limit:
            result = await enrol(identity, targets[index % len(targets)], **enrol_options)
        results.append(result)
        if progress is not None:
            progress(len(results), total, result)
        return result

    await asyncio.gather(*(one(index, identity) for index, identity in enumerate(identities)))
    return summarise(results, time.monotonic() - started)


def summarise(results, elapsed: float) -> dict:
    failed = Counter(result.outcome if not result.detail else f"{result.outcome}: {result.detail}"
                     for result in results if not result.ok)
    ok = sum(1 for result in results if result.ok)
    return {
        "total": len(results), "ok": ok, "failed": sum(failed.values()), "failed_by_reason": dict(failed),
        "elapsed_seconds": round(elapsed, 3), "rate_per_second": round(len(results) / elapsed, 2) if elapsed else 0.0,
        "results": results,
    }
