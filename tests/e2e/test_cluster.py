"""Three ``opencapf serve`` nodes on one PostgreSQL store and one state directory (same CAPF key files,
same secret.key), as docs/cluster.md ("Running several nodes") describes them. Phones list every node
and go on with the next when one is down; whatever node a phone or an attacker reaches, the store's
rules hold as on one node."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import signal
import time

import pytest

from support.cluster import LEADER_LINE, Cluster, cluster_load, fleet_phones, prepare
from support.phones import phone
from support.protocol import add_phone
from support.serving import wait_for, wait_gone
from support.tools import run_cli
from _opencapf import bulk
from _opencapf.ca import certificates as c
from _opencapf.simulator.client import Target, enrol
from _opencapf.simulator.fleet import run_fleet
from _opencapf.store import open_store
from _opencapf.store import service as service_records
from _opencapf.vocabulary import format_utc, utc_now

PHONES = 150
CONCURRENCY = 30
STRING = "4815162342"


@pytest.fixture
def shared_state(tmp_path):
    """The state directory every node is given (``--state-dir``): keys/ and secret.key."""
    path = tmp_path / "state"
    path.mkdir(mode=0o700)
    return str(path)


@pytest.fixture
def cluster_store(postgres_dsn, shared_state):
    """The test's own connection to the shared store."""
    store = open_store(postgres_dsn, state_dir=shared_state, actor="test")
    yield store
    store.close()


def _in(seconds):
    return format_utc(utc_now() + dt.timedelta(seconds=seconds))


def test_phones_spread_over_three_nodes_all_finish_when_one_is_killed(postgres_dsn, shared_state, tmp_path):
    report = cluster_load(postgres_dsn, shared_state, str(tmp_path), count=PHONES, concurrency=CONCURRENCY)
    print(f"cluster run: {report}")
    assert report["problems"] == []
    assert (report["ok"], report["failed"], report["failed_by_reason"]) == (PHONES, 0, {})
    assert report["killed_at"] == PHONES // 3 and report["went_on_with_another_node"] > 0
    assert len(report["by_port"]) == 3 and min(report["by_port"].values()) > 0, report["by_port"]


def test_brute_force_spread_over_every_node_is_evaluated_lockout_failures_times(cluster_store, postgres_dsn,
                                                                                shared_state, tmp_path):
    name = "SEP00AB00CD00F1"
    lockout = 3
    capf_pem = prepare(postgres_dsn, shared_state, [], lockout_failures=lockout)
    add_phone(cluster_store, name, operation="install_upgrade", auth_mode="auth_string", auth_string=STRING,
              key_order="ec")
    attackers = [phone(tmp_path / f"attacker{index}", name, auth_mode="auth_string", auth_string=f"{index:04d}")
                 for index in range(15)]
    with Cluster(postgres_dsn, shared_state, str(tmp_path)).start() as cluster:
        targets = cluster.targets(capf_pem)

        async def all_at_once():
            return await asyncio.gather(*(enrol(identity, targets[index % 3], retries=0)
                                          for index, identity in enumerate(attackers)))

        results = asyncio.run(asyncio.wait_for(all_at_once(), 60))
        assert cluster.stop() == [0, 0, 0]
    assert {result.port for result in results} == {node.port for node in cluster.nodes}
    assert [result.end_reason for result in results] == [7] * len(attackers)
    with cluster_store.read() as tx:
        row = tx.one("SELECT locked, auth_failures FROM phones WHERE name = ?", (name,))
        evaluated = tx.scalar("SELECT count(*) FROM audit_events WHERE action = 'phone.auth_failed' AND subject = ?",
                              (name,))
    assert (row["locked"], row["auth_failures"], evaluated) == (1, lockout, lockout)


def test_a_parameter_changed_through_one_connection_is_used_by_every_node(cluster_store, postgres_dsn,
                                                                          shared_state, tmp_path):
    names = [f"SEP00000000E{index:03X}" for index in range(3)]
    capf_pem = prepare(postgres_dsn, shared_state, names)
    with Cluster(postgres_dsn, shared_state, str(tmp_path)).start() as cluster:
        with cluster_store.transaction() as tx:  # the nodes have read the parameters at their start
            service_records.write(tx, "test", {"validity_days": 123})
        results = []
        for node, identity in zip(cluster.nodes, fleet_phones(names)):
            only = Target((("127.0.0.1", node.port),), cadata=capf_pem, timeout=30)
            results.append((identity, asyncio.run(asyncio.wait_for(enrol(identity, only, retries=0), 60))))
        assert cluster.stop() == [0, 0, 0]
    for identity, result in results:
        assert result.outcome == "ok", result
        lifetime = c.not_after(identity.lsc) - c.not_before(identity.lsc)
        assert lifetime.days == 123, (identity.device_name, lifetime)


def _job_events(store):
    with store.read() as tx:
        return tx.query("SELECT action, subject, actor FROM audit_events WHERE action = 'job.succeeded' ORDER BY id")


def test_due_jobs_run_once_with_three_nodes_and_after_the_leader_is_killed(cluster_store, postgres_dsn, shared_state,
                                                                           tmp_path):
    prepare(postgres_dsn, shared_state, [], scheduler_interval_seconds=1)
    names = [f"SEP00000000F{index:03X}" for index in range(4)]
    for name in names:
        add_phone(cluster_store, name)

    def schedule(batch, seconds):
        job = bulk.converge(cluster_store, query={"names": batch}, run_at=_in(seconds),
                            settings={"certificate_operation": "install_upgrade", "authentication_mode": "null_string"})
        assert job["job"]["status"] == "scheduled"
        return str(job["job"]["id"])

    with Cluster(postgres_dsn, shared_state, str(tmp_path)).start() as cluster:
        first = [schedule(names[:2], 2), schedule(names[2:3], 3)]
        assert wait_for(lambda: sorted(e["subject"] for e in _job_events(cluster_store)) == sorted(first), 30)
        time.sleep(2)  # two more ticks of every node: nothing may run a second time
        assert sorted(e["subject"] for e in _job_events(cluster_store)) == sorted(first)
        leader = cluster.leader()
        assert leader is not None and cluster.logs().count(LEADER_LINE) == 1, cluster.logs()

        leader.kill()
        later = schedule(names[3:], 1)
        assert wait_for(lambda: later in [e["subject"] for e in _job_events(cluster_store)], 30), cluster.logs()
        time.sleep(2)
        successor = cluster.leader()
        codes = cluster.stop()
    events = _job_events(cluster_store)
    assert sorted(e["subject"] for e in events) == sorted(first + [later])
    assert successor is not None and successor is not leader
    assert codes == [0, 0] and "Traceback" not in cluster.logs()


def test_two_processes_per_node_serve_a_postgresql_store(postgres_dsn, shared_state, tmp_path):
    """``serve --processes 2`` on a PostgreSQL store: each worker its own connection, one scheduler."""
    names = [f"SEP00000000D{index:03X}" for index in range(20)]
    capf_pem = prepare(postgres_dsn, shared_state, names)
    with Cluster(postgres_dsn, shared_state, str(tmp_path), count=1).start("--processes", "2") as cluster:
        summary = asyncio.run(asyncio.wait_for(run_fleet(fleet_phones(names), cluster.targets(capf_pem),
                                                         concurrency=10, retries=0), 60))
        assert wait_for(lambda: LEADER_LINE in cluster.logs(), 20)
        assert cluster.stop() == [0]
    assert (summary["ok"], summary["failed_by_reason"]) == (len(names), {})
    assert cluster.logs().count(LEADER_LINE) == 1 and "Traceback" not in cluster.logs()
    assert os.path.isdir(os.path.join(shared_state, "keys"))


def test_a_state_directory_kept_for_a_new_database_serves_the_new_capf_certificate(postgres_server, shared_state,
                                                                                   tmp_path):
    """The database is created again (same state directory, as an operator rebuilding the store does):
    its CAPF certificate has the same row id as the old one, and the node must serve the new one."""
    for attempt in range(2):
        database = postgres_server.create_database()
        location = postgres_server.dsn(database)
        name = f"SEP00000000C{attempt:03X}"
        capf_pem = prepare(location, shared_state, [name])
        try:
            with Cluster(location, shared_state, str(tmp_path / str(attempt)), count=1).start() as cluster:
                only = Target((("127.0.0.1", cluster.nodes[0].port),), cadata=capf_pem, timeout=30)
                result = asyncio.run(asyncio.wait_for(enrol(fleet_phones([name])[0], only, retries=0), 60))
                assert cluster.stop() == [0]
        finally:
            postgres_server.drop_database(database)
        assert result.outcome == "ok", (attempt, result, cluster.logs())


def test_a_node_runs_as_a_daemon_on_the_postgresql_store(postgres_dsn, shared_state, tmp_path):
    """``serve --daemon`` (the capf_server role's supervised node) makes its file paths absolute but
    keeps the connection string as given."""
    prepare(postgres_dsn, shared_state, [])
    pid_file, log_file = tmp_path / "node.pid", tmp_path / "node.log"
    started = run_cli("--store", postgres_dsn, "--state-dir", shared_state, "--json", "serve", "--listen", "127.0.0.1",
                      "--port", "0", "--processes", "1", "--daemon", "--pid-file", str(pid_file), "--log-file", str(log_file),
                      timeout=60)
    assert started.returncode == 0, started.stderr
    pid = json.loads(started.stdout)["pid"]
    os.kill(pid, signal.SIGTERM)
    assert wait_gone(pid), "the daemon did not stop on SIGTERM"
    assert "listening on 127.0.0.1" in log_file.read_text()
