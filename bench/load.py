# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""``scripts/load-test``: many simulated phones enrolling at once against one real ``serve`` process.

The phones (EC P-256 keys, install/upgrade, null string) come from five loopback source addresses
(127.0.0.11-15, each one "site" with at most ``concurrency / 5`` sessions at a time), so the
default ``max_sessions_per_address`` of 100 holds. While they run, a separate process enrols a
"new phone" from 127.0.0.2 every ``--probe-interval`` seconds and times each enrolment from
connect to END_SESSION: the latency a phone sees while the service is under load. The server's
peak resident set size is its VmHWM from /proc. Every phone must enrol (exit 1 otherwise).

    scripts/load-test                                  # 2,000 phones, 500 at once (documented run)
    scripts/load-test --phones 40 --concurrency 20     # seconds
    scripts/load-test --cluster 3                      # 2,000 phones, 200 at once, over three serve nodes
                                                       # on one PostgreSQL, node 0 killed a third of the way

The cluster run is ``tests/support/cluster.py``'s ``cluster_load`` on a private PostgreSQL server
(as ``scripts/bench --only cluster`` starts it): every phone must finish through the surviving nodes
and the store must keep the crash-safety certificate invariants (exit 1 otherwise).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from . import serving

SITES = tuple(f"127.0.0.{11 + index}" for index in range(5))
PROBE_ADDRESS = "127.0.0.2"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scripts/load-test", description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--phones", type=int, default=2000, help="phones in the load (default 2000)")
    parser.add_argument("--concurrency", type=int, help="sessions open at once (default 500; 200 with --cluster)")
    parser.add_argument("--cluster", type=int, metavar="NODES",
                        help="NODES (at least 2) serve nodes on one PostgreSQL store, node 0 killed part-way")
    parser.add_argument("--probe-interval", type=float, default=1.0,
                        help="seconds between new-phone probes during the load (default 1)")
    parser.add_argument("--json", default=os.path.join("bench-results", "load.json"), metavar="PATH",
                        help="result file (default bench-results/load.json)")
    parser.add_argument("--work-dir", metavar="DIR", help="scratch directory (default: the system temporary directory)")
    return parser


def _names(prefix: str, count: int) -> list[str]:
    return [f"{prefix}{index:09X}" for index in range(1, count + 1)]


def _prepare(store_path: str, names: list[str]) -> str:
    from _opencapf.ca import authority
    from _opencapf.phone_config import PhoneRequest, check_settings, converge_many
    from _opencapf.store import open_store
    store = open_store(store_path, actor="load-test")
    try:
        authority.ensure(store)
        settings = check_settings({"certificate_operation": "install_upgrade", "key_order": "ec"})
        with store.transaction() as tx:
            converge_many(tx, store.actor, store.secret(), [(None, PhoneRequest(name, settings)) for name in names],
                          via="capf_phone")
        return authority.current(store)["pem"]
    finally:
        store.close()


def _identity(name: str):
    from _opencapf.dependencies import ec
    from _opencapf.simulator.identity import PhoneIdentity, PhoneSettings
    return PhoneIdentity(PhoneSettings(name), key_factory=lambda kind, size: ec.generate_private_key(ec.SECP256R1()))


def _probe(port: int, capf_pem: str, names: list[str], interval: float, ready, start, stop,
           results) -> None:
    """A separate process: a new phone every ``interval`` seconds from ``start`` until ``stop``
    (each timed on its own; a slow one does not delay the next)."""
    _identity(names[0])  # imports done: the first probe starts as soon as it is asked for
    ready.set()
    results.put(asyncio.run(_probes(port, capf_pem, names, interval, start, stop)))


async def _probes(port: int, capf_pem: str, names: list[str], interval: float, start, stop) -> list:
    from _opencapf.simulator.client import Target, enrol
    target = Target(("127.0.0.1",), port, cadata=capf_pem, timeout=60, source_address=PROBE_ADDRESS)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, start.wait)

    async def one(name: str) -> dict:
        identity = _identity(name)
        during_load = not stop.is_set()  # it connected while the load was running
        began = time.perf_counter()
        result = await enrol(identity, target, retries=0)
        return {"phone": name, "outcome": result.outcome, "detail": result.detail,
                "ms": round((time.perf_counter() - began) * 1000, 1), "during_load": during_load}

    running = []
    for name in names:
        if stop.is_set():
            break
        running.append(asyncio.ensure_future(one(name)))
        await loop.run_in_executor(None, stop.wait, interval)
    return list(await asyncio.gather(*running))


async def _load(identities, port: int, capf_pem: str, concurrency: int, progress) -> dict:
    from _opencapf.simulator.client import Target
    from _opencapf.simulator.fleet import run_fleet, summarise
    per_site = max(1, concurrency // len(SITES))
    groups = [identities[index::len(SITES)] for index in range(len(SITES))]
    started = time.monotonic()
    summaries = await asyncio.gather(*(
        run_fleet(group, Target(("127.0.0.1",), port, cadata=capf_pem, timeout=60, source_address=site),
                  concurrency=per_site, retries=0, progress=progress)
        for site, group in zip(SITES, groups)))
    return summarise([result for summary in summaries for result in summary["results"]], time.monotonic() - started)


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def run(args) -> dict:
    if args.concurrency is None:
        args.concurrency = 200 if args.cluster else 500
    if args.cluster is not None:
        return run_cluster(args)
    scratch = tempfile.mkdtemp(prefix="opencapf-load-", dir=args.work_dir)
    try:
        return _run(args, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _run(args, scratch: str) -> dict:
    store_path = os.path.join(scratch, "capf.db")
    names = _names("SEP", args.phones)
    probe_names = _names("SEPB", max(4, int(600 / max(args.probe_interval, 0.1))))
    capf_pem = _prepare(store_path, names + probe_names)
    log_path = os.path.join(scratch, "serve.log")
    with open(log_path, "w", encoding="utf-8") as log:
        options = ["--queue-timeout", "120", "--step-timeout", "60"]
        server, port = serving.start(store_path, log, options, tool="load-test")
        try:
            idle = serving.memory(server.pid)
            context = multiprocessing.get_context("spawn")
            ready, start, stop, results = context.Event(), context.Event(), context.Event(), context.Queue()
            prober = context.Process(target=_probe, args=(port, capf_pem, probe_names, args.probe_interval, ready,
                                                          start, stop, results))
            prober.start()
            if not ready.wait(120):
                raise SystemExit("load-test: the probe process did not start")
            identities = [_identity(name) for name in names]
            warm = max(1, args.phones // 20)

            done = [0]

            def progress(_done_in_site, _total_in_site, _result):
                done[0] += 1
                if done[0] >= warm:  # the first probe once the load is up to speed
                    start.set()
                if done[0] % 250 == 0:
                    sys.stderr.write(f"load-test: {done[0]} phones done\n")

            summary = asyncio.run(_load(identities, port, capf_pem, args.concurrency, progress))
            stop.set()
            start.set()
            probes = results.get(timeout=180)
            prober.join(30)
            memory = serving.memory(server.pid)
        finally:
            server.terminate()
            try:
                server.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()
                server.communicate()
    with open(log_path, encoding="utf-8") as handle:
        server_log = handle.read()
    from _opencapf.store import open_store
    store = open_store(store_path, actor="load-test", create=False)
    try:
        with store.read() as tx:
            outcomes = {row["outcome"]: row["n"] for row in
                        tx.query("SELECT outcome, COUNT(*) AS n FROM sessions GROUP BY outcome")}
            installed = tx.one("SELECT COUNT(*) AS n FROM certificates WHERE kind = 'lsc' AND status = 'installed'")["n"]
    finally:
        store.close()
    during = [probe["ms"] for probe in probes if probe["during_load"] and probe["outcome"] == "ok"]
    return {
        "phones": args.phones,
        "concurrency": args.concurrency,
        "sites": list(SITES),
        "ok": summary["ok"],
        "failed": summary["failed"],
        "failed_by_reason": summary["failed_by_reason"],
        "elapsed_seconds": summary["elapsed_seconds"],
        "enrolments_per_second": summary["rate_per_second"],
        "server_rss_mib": {"idle": idle.get("VmRSS"), "end": memory.get("VmRSS"), "peak": memory.get("VmHWM")},
        "new_phone_ms": {
            "probes": len(probes), "during_load": len(during),
            "p50": round(statistics.median(during), 1) if during else None,
            "p90": round(_percentile(during, 0.9), 1) if during else None,
            "max": max(during) if during else None,
        },
        "probe_failures": [probe for probe in probes if probe["outcome"] != "ok"],
        "sessions_by_outcome": outcomes,
        "lscs_installed": installed,
        "server_exit_code": server.returncode,
        "server_tracebacks": server_log.count("Traceback"),
        "load_average": [round(value, 2) for value in os.getloadavg()],
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": "scripts/load-test" + ("" if (args.phones, args.concurrency) == (2000, 500) else
                                          f" --phones {args.phones} --concurrency {args.concurrency}"),
    }


def run_cluster(args) -> dict:
    from .cluster import cluster_load, postgresql  # pylint: disable=import-outside-toplevel

    scratch = tempfile.mkdtemp(prefix="opencapf-load-", dir=args.work_dir)
    try:
        with postgresql() as database:
            report = cluster_load(database(), scratch, os.path.join(scratch, "nodes"), count=args.phones,
                                  concurrency=args.concurrency, nodes=args.cluster)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return dict(report, phones=args.phones, concurrency=args.concurrency, nodes=args.cluster)


def passed(report: dict) -> bool:
    if "nodes" in report:
        return report["failed"] == 0 and report["ok"] == report["phones"] and not report["problems"]
    return (report["failed"] == 0 and report["ok"] == report["phones"] and not report["probe_failures"]
            and report["new_phone_ms"]["during_load"] > 0 and report["server_tracebacks"] == 0
            and report["server_exit_code"] == 0)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.cluster is not None and args.cluster < 2:
        parser.error("--cluster: at least 2 nodes (node 0 is killed part-way)")
    report = run(args)
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2)
        handle.write("\n")
    if "nodes" in report:
        sys.stdout.write(
            f"{report['ok']}/{report['phones']} phones enrolled ({report['failed']} failed) at concurrency "
            f"{report['concurrency']} over {report['nodes']} nodes in {report['elapsed_seconds']} s "
            f"({report['rate_per_second']}/s); node 0 killed after {report['killed_at']} phones, "
            f"{report['went_on_with_another_node']} went on with another node\n"
            f"store problems: {len(report['problems'])}\n" + "".join(f"  {line}\n" for line in report["problems"][:20])
            + f"results: {args.json}\n")
        return 0 if passed(report) else 1
    probe = report["new_phone_ms"]
    sys.stdout.write(
        f"{report['ok']}/{report['phones']} phones enrolled ({report['failed']} failed) at concurrency "
        f"{report['concurrency']} in {report['elapsed_seconds']} s ({report['enrolments_per_second']}/s)\n"
        f"server RSS: idle {report['server_rss_mib']['idle']} MiB, peak {report['server_rss_mib']['peak']} MiB\n"
        f"new phone during the load: {probe['during_load']} probes, p50 {probe['p50']} ms, p90 {probe['p90']} ms, "
        f"max {probe['max']} ms\nresults: {args.json}\n")
    return 0 if passed(report) else 1


if __name__ == "__main__":
    sys.exit(main())
