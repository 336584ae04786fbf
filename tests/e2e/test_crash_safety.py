"""SIGKILL in the middle of a batch of issuances leaves a consistent store."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time

from _opencapf.ca import certificates as c
from _opencapf.store import open_store
from support.tools import ROOT, run_cli

WORKER = r"""
import sys
sys.path.insert(0, sys.argv[1])
from _opencapf.ca import lsc
from _opencapf.dependencies import ec
from _opencapf.store import open_store
store = open_store(sys.argv[2], actor="crash-test")
keys = [ec.generate_private_key(ec.SECP256R1()).public_key() for _n in range(8)]
n = 0
while True:
    lsc.issue(store, "SEP%012X" % (n % 50), keys[n % 8], source="crash-test")
    n += 1
    sys.stdout.write(f"{n}\n")
    sys.stdout.flush()
"""


def run_until_killed(store_path, rng):
    process = subprocess.Popen([sys.executable, "-c", WORKER, os.path.join(ROOT, "plugins", "module_utils"), store_path],
                               stdout=subprocess.PIPE, text=True)
    target = rng.randint(1, 40)
    reported = 0
    deadline = time.monotonic() + 60
    while reported < target and time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        reported = int(line)
    time.sleep(rng.random() * 0.02)  # land somewhere inside the next issuance
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    process.stdout.close()
    assert reported >= target, "worker stopped before it was killed"
    return reported


def test_sigkill_during_issuance_keeps_store_consistent(tmp_path):
    """SQLite only: a killed SQLite writer and the file's own checks (integrity_check, foreign_key_check)."""
    store_path = str(tmp_path / "capf.db")
    run_cli("--store", store_path, "init", check=True)
    rng = random.Random(20261127)
    acknowledged = 0
    for _round in range(6):
        acknowledged += run_until_killed(store_path, rng)

    connection = sqlite3.connect(store_path)
    assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert connection.execute("PRAGMA foreign_key_check").fetchall() == []
    connection.close()
    with open_store(store_path) as store, store.read() as tx:
        rows = tx.query("SELECT c.serial, c.pem, c.phone_id, p.name FROM certificates c "
                        "LEFT JOIN phones p ON p.id = c.phone_id")
        issued_events = tx.scalar("SELECT count(*) FROM audit_events WHERE action = 'certificate.issued'")
    # Every issuance the worker saw committed is there; nothing half-written or repeated.
    assert len(rows) >= acknowledged
    assert len({row["serial"] for row in rows}) == len(rows)
    assert issued_events == len(rows)
    for row in rows:
        assert row["name"] is not None
        certificate = c.load_pem_certificate(row["pem"])
        assert format(certificate.serial_number, "x") == row["serial"]
        assert c.common_name(certificate.subject) == row["name"]
