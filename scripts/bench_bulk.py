# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark: a bulk job over a 40,000-phone fleet (CSV import, query + set with generated strings, re-run).

Usage: scripts/bench-bulk [PHONES]  (or: python scripts/bench_bulk.py [PHONES])
Prints one line per step with its wall-clock time.
"""

import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(__file__))), "plugins", "module_utils"))

from _opencapf import bulk  # noqa: E402  pylint: disable=wrong-import-position
from _opencapf.store import open_store  # noqa: E402  pylint: disable=wrong-import-position


def main() -> int:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 40000
    rows = ["device_name,device_pool,model,certificate_operation,authentication_mode"]
    rows += [f"SEP{i:012X},{'HQ' if i % 4 else 'Branch'},Cisco 8845,none,null_string" for i in range(count)]
    csv_text = "\n".join(rows) + "\n"
    job = dict(query={"model": ["Cisco 8845"]},
               settings={"certificate_operation": "install_upgrade", "authentication_mode": "auth_string",
                         "key_order": "ec"},
               generate_authentication_strings=True)
    with tempfile.TemporaryDirectory() as directory:
        with open_store(os.path.join(directory, "capf.db"), actor="bench") as store:
            steps = [
                ("CSV import (insert)", lambda: bulk.converge(store, csv_content=csv_text)),
                ("CSV import again (unchanged)", lambda: bulk.converge(store, csv_content=csv_text)),
                ("query + set, check mode", lambda: bulk.converge(store, check_mode=True, **job)),
                ("query + set, unique strings", lambda: bulk.converge(store, **job)),
                ("query + set again (unchanged)", lambda: bulk.converge(store, **job)),
            ]
            for label, step in steps:
                started = time.perf_counter()
                result = step()
                elapsed = time.perf_counter() - started
                sys.stdout.write(f"{count} phones  {label:<32} {elapsed:6.2f} s  {result['counts']}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
