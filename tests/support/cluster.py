"""Several ``opencapf serve`` nodes sharing one PostgreSQL store and one state directory (a cluster on
one machine: separate ports on 127.0.0.1), and a fleet of simulated phones that list every node and
go on with the next one when a node is down. Used by tests/e2e/test_cluster.py (150 phones) and,
with the issue's 2,000 phones at concurrency 200, by ``cluster_load`` from a shell or a benchmark."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter

from support.crash import AUDIT_ROWS, CERTIFICATE_ROWS, AckingPhone, lsc_problems
from support.serving import Serving, stop_all
from support.store_phones import create_phone
from _opencapf.ca import authority
from _opencapf.dependencies import ec
from _opencapf.simulator.client import Target
from _opencapf.simulator.fleet import run_fleet
from _opencapf.simulator.identity import PhoneSettings
from _opencapf.store import open_store
from _opencapf.store import service as service_records

LEADER_LINE = "scheduler: this process (pid "
SESSION_BOUND = 30  # serve --max-session-seconds
NODE_OPTIONS = ("--enrolment-interval", "0", "--max-session-seconds", str(SESSION_BOUND), "--queue-timeout", "60")


def node(index: int, location: str, state_dir: str, workdir: str) -> Serving:
    """One ``opencapf serve`` process of the cluster (a restart keeps its port), its log in a file of its own."""
    return Serving(location, state_dir, os.path.join(workdir, f"node-{index}.log"), name=f"node {index}")


class Cluster:
    """``count`` nodes on one store; ``stop()`` ends the live ones with SIGTERM."""

    def __init__(self, location: str, state_dir: str, workdir: str, count: int = 3):
        os.makedirs(workdir, exist_ok=True)
        self.nodes = [node(index, location, state_dir, workdir) for index in range(count)]

    def start(self, *extra: str) -> "Cluster":
        try:
            for each in self.nodes:
                each.start(*NODE_OPTIONS, *extra)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> list[int]:
        """SIGTERM to the live nodes; the exit status of each of them."""
        live = [each for each in self.nodes if each.alive()]
        return stop_all(live)

    def logs(self) -> str:
        return "".join(each.log() for each in self.nodes)

    def targets(self, capf_pem: str, timeout: float = 30.0) -> list[Target]:
        """One phone configuration per node, each listing every node, starting at a different one."""
        endpoints = [("127.0.0.1", each.port) for each in self.nodes]
        return [Target(tuple(endpoints[start:] + endpoints[:start]), cadata=capf_pem, timeout=timeout)
                for start in range(len(endpoints))]

    def leader(self) -> Serving | None:
        """The live node whose process runs the scheduler (its log says so, with its pid)."""
        for each in self.nodes:
            if each.alive() and f"{LEADER_LINE}{each.pid})" in each.log():
                return each
        return None

    def __enter__(self) -> "Cluster":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def prepare(location: str, state_dir: str, names: list[str], **parameters) -> str:
    """A store with a CAPF certificate, ``names`` awaiting an EC LSC and ``parameters``; the CAPF certificate."""
    with open_store(location, state_dir=state_dir, actor="test") as store:
        authority.ensure(store)
        with store.transaction() as tx:
            for name in names:
                create_phone(tx, name, operation="install_upgrade", key_order="ec")
            # Every simulated phone connects from 127.0.0.1, like a site behind one NAT address.
            service_records.write(tx, "test", {"max_sessions_per_address": max(len(names), 10), **parameters})
        return authority.current(store)["pem"]


def fleet_phones(names: list[str]) -> list[AckingPhone]:
    # EC P-256 phone keys: cheap to make, so a run measures the service, not key generation.
    return [AckingPhone(PhoneSettings(name), key_factory=lambda kind, size: ec.generate_private_key(ec.SECP256R1()))
            for name in names]


def enrol_with_a_node_killed(cluster: Cluster, phones: list, capf_pem: str, concurrency: int,
                             kill_after: int) -> dict:
    """Enrol every phone, spread over the nodes; once ``kill_after`` phones have finished, SIGKILL node 0.
    The fleet's summary, with ``by_port`` (sessions that ended, per node port) and ``killed_at``."""
    killed = {}
    victim = cluster.nodes[0]

    def progress(done, _total, _result):
        if done >= kill_after and not killed:
            killed["at"] = done
            victim.process.send_signal(signal.SIGKILL)

    async def fleet():
        return await asyncio.wait_for(run_fleet(phones, cluster.targets(capf_pem), concurrency=concurrency,
                                                progress=progress, retries=3, retry_interval=0.2), 600)

    summary = asyncio.run(fleet())
    assert victim.process.wait(30) == -signal.SIGKILL
    summary["by_port"] = dict(Counter(result.port for result in summary["results"]))
    summary["killed_at"] = killed.get("at")
    # Phones that reached the killed node (refused, or cut mid-session) and finished through another.
    summary["went_on_with_another_node"] = sum(1 for result in summary["results"] if len(result.tried) > 1)
    return summary


def store_problems(location: str, state_dir: str, phones: list, capf_pem: str, workdir: str) -> list[str]:
    """The crash-safety certificate invariants (``support.crash.lsc_problems``) on the shared store, and
    every phone's operation recorded as succeeded."""
    with open_store(location, state_dir=state_dir, actor="test", create=False) as store, store.read() as tx:
        certificates = tx.query(CERTIFICATE_ROWS)
        audit = tx.query(AUDIT_ROWS)
        unfinished = tx.query("SELECT name, operation_status FROM phones WHERE operation_status != 'succeeded'")
    problems = lsc_problems(certificates, audit, phones, capf_pem, workdir)
    problems += [f"{row['name']} ended with operation_status {row['operation_status']}" for row in unfinished]
    if len(certificates) < len(phones):
        problems.append(f"{len(certificates)} certificates for {len(phones)} phones")
    return problems


def cluster_load(location: str, state_dir: str, workdir: str, count: int = 2000, concurrency: int = 200,
                 nodes: int = 3) -> dict:
    """The cluster run of the issue at any size: ``count`` phones over ``nodes`` nodes, node 0 killed
    (SIGKILL) a third of the way through, every phone to finish through the others. The store at
    ``location`` must be empty; returns the figures and the invariant violations (``problems``)."""
    names = [f"SEPC1A5E0{index:06X}" for index in range(1, count + 1)]
    capf_pem = prepare(location, state_dir, names)
    phones = fleet_phones(names)
    started = time.monotonic()
    with Cluster(location, state_dir, workdir, nodes).start() as cluster:
        summary = enrol_with_a_node_killed(cluster, phones, capf_pem, concurrency, kill_after=count // 3)
        codes = cluster.stop()
        text = cluster.logs()
    figures = {key: summary[key] for key in ("total", "ok", "failed", "failed_by_reason", "elapsed_seconds",
                                             "rate_per_second", "by_port", "killed_at", "went_on_with_another_node")}
    problems = store_problems(location, state_dir, phones, capf_pem, workdir)
    if any(codes):
        problems.append(f"surviving nodes exited with {codes}")
    if "Traceback" in text:
        problems.append("a node logged a traceback")
    figures.update(problems=problems, seconds=round(time.monotonic() - started, 1))
    return figures
