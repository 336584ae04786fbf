# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The I/O driver A/B: the same enrolment load against the service on the standard asyncio event
loop and on uvloop, alternately in one sitting (A B B A A B: a drift of the shared machine's speed
weighs on both alike; each figure is the median of its three runs).

Each run is ``enrolment.run_load`` (the real ``serve`` pinned to one core, the simulator on the
other, every enrolment verified) on a fresh store whose ``event_loop`` service parameter names
the loop, as an operator sets it; the server's log must say it ran on that loop. The server's CPU
time per enrolment is the figure (rates are in the details: on a shared machine they say more
about the machine's load than about the loop).
"""

from __future__ import annotations

import contextlib
import os
import statistics
import tempfile

from _opencapf.store import open_store
from _opencapf.store import service as service_records

from . import enrolment
from .harness import Figure, benchmark

LOOPS = ("asyncio", "uvloop")
ORDER = ("asyncio", "uvloop", "uvloop", "asyncio", "asyncio", "uvloop")  # three runs of each, alternated
CONCURRENCY = 50


@contextlib.contextmanager
def _stores_on(loop: str):
    """While inside: the stores ``run_load`` prepares carry ``event_loop`` = ``loop``."""
    original = enrolment._prepare_store  # pylint: disable=protected-access

    def prepare(directory, key_type, names):
        path, pem = original(directory, key_type, names)
        store = open_store(path, actor="bench")
        try:
            with store.transaction() as tx:
                service_records.write(tx, "bench", {"event_loop": loop})
        finally:
            store.close()
        return path, pem

    enrolment._prepare_store = prepare  # pylint: disable=protected-access
    try:
        yield
    finally:
        enrolment._prepare_store = original  # pylint: disable=protected-access


def _run(ctx, loop: str, size: int, pool) -> dict:
    directory = tempfile.mkdtemp(prefix=f"io-{loop}-", dir=ctx.work_dir)
    with _stores_on(loop):
        result = enrolment.run_load(directory, "rsa2048", size, CONCURRENCY, server_cores=(ctx.core,),
                                    client_cores=(ctx.client_core,), pool=pool, warmup=ctx.size(enrolment.WARMUP, 2))
    with open(os.path.join(directory, "serve.log"), encoding="utf-8") as log:
        if f"runs on the {loop} event loop" not in log.read():
            raise AssertionError(f"the server did not run on {loop}; see {directory}/serve.log")
    return result


@benchmark("io.event_loop", ("io.asyncio_cpu_ms_per_enrolment", "io.uvloop_cpu_ms_per_enrolment",
                             "io.uvloop_over_asyncio"), timeout=1500)
def event_loop_ab(ctx):
    size = ctx.size(2000, 10)
    pool = enrolment.key_pool("rsa2048", 0, ctx.smoke)
    runs = {loop: [] for loop in LOOPS}
    order = ORDER[:len(LOOPS)] if ctx.smoke else ORDER  # a smoke run only proves that both loops serve
    for loop in order:
        runs[loop].append(_run(ctx, loop, size, pool))
    cpu = {loop: statistics.median(run["server_cpu_ms_per_enrolment"] for run in runs[loop]) for loop in LOOPS}
    details = {loop: {"server_cpu_ms_per_enrolment": [run["server_cpu_ms_per_enrolment"] for run in runs[loop]],
                      "rate": [round(run["rate"], 2) for run in runs[loop]],
                      "p99_ms": [run["p99_ms"] for run in runs[loop]],
                      "server_runnable_waiting_seconds": [run["server_runnable_waiting_seconds"]
                                                          for run in runs[loop]],
                      "server_peak_rss_bytes": [run["server_peak_rss_bytes"] for run in runs[loop]],
                      "failures": sum(run["failures"] for run in runs[loop])}
               for loop in LOOPS}
    common = {"enrolments": size, "concurrency": CONCURRENCY, "key_type": "rsa2048", "order": list(order),
              "server_cores": [ctx.core], "client_cores": [ctx.client_core]}
    description = ("server CPU ms per enrolment on the {} event loop ({:,} RSA-2048 enrolments at concurrency {}, "
                   "one server process on one core, the simulator on another; median of three runs, alternated)")
    return {
        "io.asyncio_cpu_ms_per_enrolment": Figure(cpu["asyncio"], "ms/enrolment",
                                                  description.format("asyncio", size, CONCURRENCY), None,
                                                  {**common, **details["asyncio"]}),
        "io.uvloop_cpu_ms_per_enrolment": Figure(cpu["uvloop"], "ms/enrolment",
                                                 description.format("uvloop", size, CONCURRENCY),
                                                 "io.asyncio_cpu_ms_per_enrolment", {**common, **details["uvloop"]}),
        "io.uvloop_over_asyncio": Figure(
            cpu["uvloop"] / cpu["asyncio"], "x",
            "server CPU per enrolment on uvloop over the same on asyncio (below 1: uvloop is cheaper)", None,
            {**common, "asyncio": details["asyncio"], "uvloop": details["uvloop"],
             "rate_ratio": round(statistics.median(run["rate"] for run in runs["uvloop"])
                                 / statistics.median(run["rate"] for run in runs["asyncio"]), 4)}),
    }
