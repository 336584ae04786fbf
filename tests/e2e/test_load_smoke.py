"""``scripts/load-test`` at a tiny size: a real serve process, phones from five source addresses, a new
phone timed during the load, the server's peak RSS. The 2,000-phone run is documented in
docs/reliability.md; this only proves the load test still runs and reports honestly."""

from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_small_load_run_enrols_every_phone_and_reports(tmp_path):
    path = tmp_path / "load.json"
    done = subprocess.run([sys.executable, "-m", "bench.load", "--phones", "200", "--concurrency", "20",
                           "--probe-interval", "0.25", "--json", str(path), "--work-dir", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(path.read_text())
    assert (report["ok"], report["failed"], report["failed_by_reason"]) == (200, 0, {})
    assert report["new_phone_ms"]["during_load"] >= 1 and report["probe_failures"] == []
    probes = report["new_phone_ms"]["probes"]
    assert report["sessions_by_outcome"] == {"succeeded": 200 + probes}
    assert report["lscs_installed"] == 200 + probes
    assert report["server_rss_mib"]["peak"] >= report["server_rss_mib"]["idle"] > 0
    assert report["server_exit_code"] == 0 and report["server_tracebacks"] == 0
    assert "phones enrolled (0 failed)" in done.stdout
    assert os.listdir(tmp_path) == ["load.json"]  # the scratch store is removed
