# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""``python -m bench.ab BEFORE AFTER``: the server CPU per enrolment of two checkouts, measured at once.

On a machine whose speed drifts (a shared VM: the same run costs 15 to 30 % more or less CPU from
one minute to the next), two versions measured one after the other differ by the drift as much as
by the code. Here both run at the same time under the same load: each checkout's own
``bench.enrolment.run_load`` (its own ``serve`` and simulator, a fresh store) with both servers on
the first core and both simulators on the second, so that whatever slows the machine slows both.
Each pair's ratio is AFTER's CPU per enrolment over BEFORE's; the pairs alternate which one starts
first, and the median of their ratios is the result. Sharing the cores makes each figure higher
than a run alone would give; only the ratio is the measurement.

Each checkout must hold ``bench/enrolment.py`` with ``run_load`` (every version since the
benchmarks began); its code runs under this interpreter and its dependencies.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

from . import enrolment
from .harness import available_cores

# Runs in a checkout (its path is argv[1]): one measured run of that checkout's code, its figures as JSON.
CHILD = """
import json, sys, tempfile
sys.path.insert(0, sys.argv[1])
from bench import enrolment
with tempfile.TemporaryDirectory(dir=sys.argv[8] or None) as directory:
    result = enrolment.run_load(directory, sys.argv[2], int(sys.argv[3]), int(sys.argv[4]),
                                server_cores=(int(sys.argv[5]),), client_cores=(int(sys.argv[6]),),
                                warmup=int(sys.argv[7]))
print(json.dumps({key: result[key] for key in ("rate", "server_cpu_ms_per_enrolment",
                                               "client_cpu_ms_per_enrolment", "failures")}))
"""


class AbError(Exception):
    """A run that could not be measured (its checkout's output says why)."""


def _checkout(value: str) -> str:
    path = os.path.abspath(value)
    if not os.path.isfile(os.path.join(path, "bench", "enrolment.py")):
        raise argparse.ArgumentTypeError(f"{value} is not a checkout of opencapf.capf (no bench/enrolment.py in it)")
    return path


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return number


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ab",
        description="Server CPU per enrolment of two checkouts, both measured at the same time under the same "
                    "load; prints each pair and the median ratio AFTER / BEFORE.")
    parser.add_argument("before", type=_checkout, metavar="BEFORE", help="the checkout to compare against")
    parser.add_argument("after", type=_checkout, metavar="AFTER", help="the checkout with the change")
    parser.add_argument("--key-type", choices=sorted(enrolment.KEY_TYPES), default="ec256",
                        help="the CAPF and phone keys (default ec256)")
    parser.add_argument("--size", type=_positive, default=4000, help="measured enrolments per run (default 4000)")
    parser.add_argument("--concurrency", type=_positive, default=50, help="phones at once per run (default 50)")
    parser.add_argument("--warmup", type=_positive, default=enrolment.WARMUP,
                        help=f"enrolments before each run's measured part (default {enrolment.WARMUP})")
    parser.add_argument("--pairs", type=_positive, default=3, help="runs of each checkout, in pairs (default 3)")
    parser.add_argument("--json", metavar="PATH", help="also write the pairs and the median ratio to PATH")
    parser.add_argument("--work-dir", metavar="DIR",
                        help="scratch directory for the stores (default: the system temporary directory)")
    return parser


def _start(checkout: str, args, cores: tuple[int, int]) -> subprocess.Popen:
    command = [sys.executable, "-c", CHILD, checkout, args.key_type, str(args.size), str(args.concurrency),
               str(cores[0]), str(cores[1]), str(args.warmup), args.work_dir or ""]
    return subprocess.Popen(command, cwd=checkout, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _result(name: str, finished: tuple[int, str, str]) -> dict:
    code, out, err = finished
    lines = out.strip().splitlines()
    if code != 0 or not lines:
        raise AbError(f"the {name} run failed (exit {code}): {err.strip()[-1500:]}")
    result = json.loads(lines[-1])
    if result["failures"]:
        raise AbError(f"the {name} run had {result['failures']} failed enrolments: its figures are not comparable")
    return result


def _finish(process: subprocess.Popen) -> tuple[int, str, str]:
    out, err = process.communicate()
    return process.returncode, out, err


def measure(args) -> dict:
    """The pairs, each run of BEFORE and AFTER at the same time, and the median of AFTER / BEFORE."""
    cores = available_cores()
    placed = (cores[0], cores[1] if len(cores) > 1 else cores[0])  # servers on the first, simulators on the second
    pairs = []
    for index in range(args.pairs):
        order = ("before", "after") if index % 2 == 0 else ("after", "before")
        processes = {name: _start(getattr(args, name), args, placed) for name in order}
        finished = {name: _finish(process) for name, process in processes.items()}  # both, even when one failed
        results = {name: _result(name, finished[name]) for name in order}
        before, after = results["before"], results["after"]
        pairs.append({"first": order[0], "before": before, "after": after,
                      "ratio": round(after["server_cpu_ms_per_enrolment"] / before["server_cpu_ms_per_enrolment"], 4)})
        print(f"pair {index + 1} ({order[0]} started first): server CPU per enrolment before "
              f"{before['server_cpu_ms_per_enrolment']:.3f} ms, after {after['server_cpu_ms_per_enrolment']:.3f} ms, "
              f"after / before {pairs[-1]['ratio']:.3f}", flush=True)
    return {"before": args.before, "after": args.after, "key_type": args.key_type, "size": args.size,
            "concurrency": args.concurrency, "server_core": placed[0], "client_core": placed[1],
            "pairs": pairs, "median_ratio": round(statistics.median(pair["ratio"] for pair in pairs), 4)}


def main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.work_dir and not os.path.isdir(args.work_dir):
        parser.error(f"--work-dir: {args.work_dir} is not a directory")
    if args.json and not os.path.isdir(os.path.dirname(os.path.abspath(args.json))):
        parser.error(f"--json: the directory of {args.json} does not exist")
    try:
        outcome = measure(args)
    except AbError as exc:
        print(f"bench.ab: {exc}", file=sys.stderr)
        return 1
    print(f"median after / before: {outcome['median_ratio']:.3f} (server CPU per enrolment, "
          f"{enrolment.KEY_TYPES[args.key_type]}, {args.size} enrolments at concurrency {args.concurrency}, "
          f"{args.pairs} pair(s) run at once; below 1: AFTER costs less)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(outcome, handle, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
