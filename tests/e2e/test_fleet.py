"""500 simulated phones at once against one server process (the real CLI ``serve``).

SQLite only, for CI time: a fleet on a PostgreSQL store is test_cluster.py's (150 phones, three nodes)."""

from __future__ import annotations

import asyncio
import os

from support.protocol import openssl_verify_all
from support.serving import Serving
from support.store_phones import create_phone
from _opencapf.ca import authority
from _opencapf.dependencies import ec
from _opencapf.simulator.client import Target
from _opencapf.simulator.fleet import run_fleet
from _opencapf.simulator.identity import PhoneIdentity, PhoneSettings
from _opencapf.store import service as service_records

COUNT = 500


def test_500_concurrent_phones_all_enrol(ca_store, store_path, tmp_path):
    names = [f"SEP{index:012X}" for index in range(1, COUNT + 1)]
    with ca_store.transaction() as tx:
        for name in names:
            create_phone(tx, name, operation="install_upgrade", key_order="ec")
        # Every simulated phone connects from 127.0.0.1, like a site behind one NAT address.
        service_records.write(tx, "test", {"max_sessions_per_address": COUNT})
    capf_pem = authority.current(ca_store)["pem"]
    # EC P-256 phone keys: cheap to make, so the run measures the service, not key generation.
    identities = [PhoneIdentity(PhoneSettings(name), key_factory=lambda kind, size: ec.generate_private_key(ec.SECP256R1()))
                  for name in names]
    with Serving.on(ca_store, tmp_path / "serve.log").start("--queue-timeout", "60", "--step-timeout", "60") as serving:
        async def fleet():
            barrier = asyncio.Barrier(COUNT)  # every phone holds an open session before any continues
            return await asyncio.wait_for(run_fleet(identities, Target(("127.0.0.1",), serving.port, cadata=capf_pem,
                                                                       timeout=60),
                                                    concurrency=COUNT, retries=0, barrier=barrier), 170)
        summary = asyncio.run(fleet())
    errors = serving.log()
    assert summary["failed_by_reason"] == {}
    assert summary["ok"] == COUNT
    assert serving.returncode == 0 and "Traceback" not in errors and "CAPF service stopped" in errors
    with ca_store.read() as tx:
        rows = tx.query("SELECT pem FROM certificates WHERE status = 'installed' AND kind = 'lsc'")
        outcomes = tx.query("SELECT outcome, COUNT(*) AS n FROM sessions GROUP BY outcome")
    assert len(rows) == COUNT
    assert outcomes == [{"outcome": "succeeded", "n": COUNT}]
    assert openssl_verify_all(capf_pem, [row["pem"] for row in rows], tmp_path) == COUNT
    assert os.path.exists(store_path)
