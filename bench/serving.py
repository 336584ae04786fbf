# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A real ``opencapf serve`` process for the load tools (``bench.load``, ``bench.hostile``), and
what it costs in memory."""

from __future__ import annotations

import os
import subprocess
import sys

from . import ENGINE_PATH, ROOT


def start(store_path: str, log, options: list[str], *, tool: str, env: dict | None = None) -> tuple[subprocess.Popen, int]:
    """``serve`` on 127.0.0.1 and a free port with ``options``; return the process and the port. One server
    process unless ``options`` name ``--processes``: the tools measure that one process (its memory, its CPU)."""
    processes = [] if "--processes" in options else ["--processes", "1"]
    process = subprocess.Popen(
        [sys.executable, "-m", "_opencapf", "--store", store_path, "serve", "--listen", "127.0.0.1", "--port", "0",
         *processes, *options],
        stdout=subprocess.PIPE, stderr=log, text=True, env={**os.environ, "PYTHONPATH": ENGINE_PATH, **(env or {})},
        cwd=ROOT)
    line = process.stdout.readline()
    if not line.startswith("listening on"):
        process.kill()
        raise SystemExit(f"{tool}: serve did not start: {line!r}")
    return process, int(line.split()[-1])


def memory(pid: int) -> dict:
    """VmRSS and VmHWM (peak resident set) of a process, in MiB."""
    found = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        for line in handle:
            key, _sep, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = round(int(value.split()[0]) / 1024, 1)
    return found
