# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""``scripts/bench``: run the selected benchmarks, each in a fresh interpreter; print one table; write JSON."""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as _dt
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

# Importing the benchmark modules registers their benchmarks.
from . import (  # noqa: F401 pylint: disable=unused-import
    ROOT, cluster, convergence, directory, enrolment, harness, hostile,
    html_report, io_driver, limits, machine, report, reports, targets)
from .harness import BENCHMARKS, DERIVED, Context, Figure

DEFAULT_JSON = os.path.join("bench-results", "latest.json")
DEFAULT_DOCS = os.path.join("docs", "benchmarks.md")
SCHEMA_VERSION = 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=harness.BENCH_COMMAND,
        description="Measure opencapf against the limits of this machine; print one table and write JSON.")
    parser.add_argument("--only", action="append", default=[], metavar="NAME[,NAME]",
                        help="run only these figures, benchmarks or sections (e.g. limits.rsa2048_sign, limits)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks the harness in seconds")
    parser.add_argument("--json", default=DEFAULT_JSON, metavar="PATH", help=f"result file (default {DEFAULT_JSON})")
    parser.add_argument("--write-docs", nargs="?", const=DEFAULT_DOCS, metavar="PATH",
                        help=f"write the results section of {DEFAULT_DOCS} (or PATH) from the result file")
    parser.add_argument("--from-json", metavar="PATH",
                        help="do not measure: print the table of an earlier result file (and --write-docs)")
    parser.add_argument("--work-dir", metavar="DIR",
                        help="scratch directory for stores and keys (default: the system temporary directory)")
    parser.add_argument("--list", action="store_true", help="list every figure and exit")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--cores", help=argparse.SUPPRESS)
    return parser


def select(names: list[str]) -> tuple[list[str], list[str]]:
    """The benchmarks and derived figures to run for ``names`` (all when empty)."""
    wanted = [part.strip() for name in names for part in name.split(",") if part.strip()]
    if not wanted:
        return list(BENCHMARKS), list(DERIVED)
    benches, derivations, unknown = set(), set(), []
    for name in wanted:
        matched = False
        for bench in BENCHMARKS.values():
            if name in (bench.name, bench.section) or name in bench.figures:
                benches.add(bench.name)
                matched = True
        for item in DERIVED.values():
            if name in (item.name, item.section):
                derivations.add(item.name)
                matched = True
        if not matched:
            unknown.append(name)
    if unknown:
        raise SystemExit(f"bench: unknown figure, benchmark or section: {', '.join(unknown)} (see --list)")
    pending = list(derivations)
    while pending:  # a derived figure may need another derived figure
        for needed in DERIVED[pending.pop()].inputs:
            source = harness.producer(needed)
            if source.name in DERIVED:
                if source.name not in derivations:
                    derivations.add(source.name)
                    pending.append(source.name)
            else:
                benches.add(source.name)
    return [b for b in BENCHMARKS if b in benches], [d for d in DERIVED if d in derivations]


def _child(args) -> int:
    """Run one benchmark in this (fresh) interpreter and write its figures as JSON on stdout."""
    bench = BENCHMARKS[args.child]
    cores = tuple(int(core) for core in args.cores.split(","))
    figures = bench.function(Context(args.smoke, args.work_dir, cores))
    if set(figures) != set(bench.figures):
        raise AssertionError(f"{bench.name} produced {sorted(figures)}, declared {sorted(bench.figures)}")
    for name, found in figures.items():
        if not found.value > 0:
            raise AssertionError(f"{name} measured {found.value!r}; a figure must be positive")
    sys.stdout.write(json.dumps({name: found.as_dict() for name, found in figures.items()}) + "\n")
    return 0


def _run_child(bench, smoke: bool, work_root: str, cores: tuple[int, ...]) -> tuple[dict | None, str, float]:
    directory = tempfile.mkdtemp(prefix=bench.name.replace(".", "-") + "-", dir=work_root)
    command = [sys.executable, "-m", "bench", "--child", bench.name, "--work-dir", directory,
               "--cores", ",".join(map(str, cores))] + (["--smoke"] if smoke else [])
    start = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=bench.timeout, check=False)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {bench.timeout} s", time.perf_counter() - start
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        return None, (done.stderr.strip() or f"exit code {done.returncode}")[-4000:], seconds
    try:
        return json.loads(done.stdout.strip().splitlines()[-1]), "", seconds
    except (ValueError, IndexError):
        return None, f"unreadable output: {done.stdout[-500:]!r}", seconds


def _entry(name: str, found: dict, section: str, smoke: bool) -> dict:
    entry = {"section": section, "value": found["value"], "unit": found["unit"],
             "description": found["description"], "command": harness.reproduce_command(name, smoke),
             "baseline": found.get("baseline"), "details": found.get("details", {})}
    return entry


def _link_baselines(figures: dict) -> None:
    for entry in figures.values():
        name = entry["baseline"]
        if name and name in figures:
            entry["baseline"] = {"figure": name, "value": figures[name]["value"],
                                 "ratio": entry["value"] / figures[name]["value"]}
        else:
            entry["baseline"] = None


def _load_average() -> list[float] | None:
    """Other work on the machine skews every figure; the load average shows whether there was any."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None


def _derive(derivations: list[str], figures: dict, failures: dict, smoke: bool) -> None:
    """Compute derived figures once their inputs exist (in any order; some need others)."""
    waiting = list(derivations)
    while waiting:
        ready = [name for name in waiting if all(needed in figures for needed in DERIVED[name].inputs)]
        if not ready:
            break
        for name in ready:
            item = DERIVED[name]
            inputs = {needed: Figure(**{k: v for k, v in figures[needed].items()
                                        if k in ("value", "unit", "description", "details")})
                      for needed in item.inputs}
            figures[name] = _entry(name, item.function(inputs).as_dict(), item.section, smoke)
            waiting.remove(name)
    for name in waiting:
        failures[name] = {"error": "an input figure failed", "command": harness.reproduce_command(name, smoke)}


def measure(args) -> dict:
    benches, derivations = select(args.only)
    cores = harness.available_cores()
    scratch = args.work_dir or tempfile.gettempdir()
    os.makedirs(scratch, exist_ok=True)
    work_root = tempfile.mkdtemp(prefix="opencapf-bench-", dir=scratch)
    started = _dt.datetime.now(_dt.timezone.utc)
    load_at_start = _load_average()
    figures, failures, timings = {}, {}, {}
    # Full runs measure one benchmark at a time; smoke runs only prove the benchmarks still work,
    # so they use every core, each child pinned to a different one.
    lanes = len(cores) if args.smoke else 1

    def run(position: int, name: str):
        rotated = cores[position % lanes:] + cores[:position % lanes]
        return name, _run_child(BENCHMARKS[name], args.smoke, work_root, rotated)

    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=lanes) as pool:
            for name, (produced, error, seconds) in pool.map(lambda item: run(*item), enumerate(benches)):
                bench = BENCHMARKS[name]
                timings[name] = round(seconds, 3)
                sys.stderr.write(f"bench: {name} {seconds:.1f} s{'' if produced else ' FAILED'}\n")
                if produced is None:
                    failures[name] = {"error": error, "command": harness.reproduce_command(name, args.smoke)}
                    continue
                for figure_name in bench.figures:
                    figures[figure_name] = _entry(figure_name, produced[figure_name], bench.section, args.smoke)
    finally:
        shutil.rmtree(work_root, ignore_errors=True)
    _derive(derivations, figures, failures, args.smoke)
    _link_baselines(figures)
    command = harness.BENCH_COMMAND + "".join(f" --only {shlex.quote(o)}" for o in args.only) + \
        (" --smoke" if args.smoke else "")
    return {
        "schema": SCHEMA_VERSION,
        "command": command,
        "smoke": args.smoke,
        "started_at": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "finished_at": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": dict(machine.describe(scratch), cores_used=list(cores),
                        load_average={"start": load_at_start, "end": _load_average()}),
        "figures": figures,
        "failures": failures,
        "benchmark_seconds": timings,
        "targets": targets.judge_all(figures, args.smoke),
    }


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.child:
        return _child(args)
    if args.list:
        for name in harness.figure_names():
            sys.stdout.write(name + "\n")
        return 0
    if args.from_json:
        with open(args.from_json, encoding="utf-8") as handle:
            results = json.load(handle)
        json_path = args.from_json
    else:
        results = measure(args)
        json_path = args.json
        os.makedirs(os.path.dirname(os.path.abspath(json_path)), exist_ok=True)
        with open(json_path, "w", encoding="utf-8") as handle:
            json.dump(results, handle, indent=2, sort_keys=False)
            handle.write("\n")
    sys.stdout.write(report.table(results))
    sys.stdout.write(f"results: {json_path}\n")
    if args.write_docs:
        if results["smoke"]:
            sys.stderr.write("bench: not writing docs from a smoke run; its numbers mean nothing\n")
            return 2
        # The docs' numbers travel with the result file they came from, so anyone can check them.
        kept = os.path.splitext(args.write_docs)[0] + ".json"
        if os.path.abspath(kept) != os.path.abspath(json_path):
            shutil.copyfile(json_path, kept)
        report.write_docs(args.write_docs, results, os.path.relpath(os.path.abspath(kept), ROOT))
        sys.stdout.write(f"docs: {args.write_docs} (numbers from {kept})\n")
    return 1 if results.get("failures") else 0
