"""``python -m bench.ab``: two checkouts' server CPU per enrolment, measured at the same time.

Real runs at tiny sizes (each checkout's own ``serve`` and simulator over TLS); no timing is asserted,
only that both sides were measured, paired and reported, and that errors name their cause.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = ("--size", "30", "--warmup", "5")


def _ab(*args, timeout=240):
    return subprocess.run([sys.executable, "-m", "bench.ab", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, check=False)


def _copy_of_checkout(path) -> str:
    """What a run needs of a checkout: the benchmarks and the engine (with the simulator in it)."""
    shutil.copytree(os.path.join(ROOT, "bench"), path / "bench", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(os.path.join(ROOT, "plugins", "module_utils"), path / "plugins" / "module_utils",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return str(path)


def test_pairs_of_runs_at_once_and_their_median_ratio(tmp_path):
    other = _copy_of_checkout(tmp_path / "other")
    work = tmp_path / "work"
    work.mkdir()
    path = tmp_path / "ab.json"
    done = _ab(ROOT, other, *TINY, "--pairs", "2", "--json", str(path), "--work-dir", str(work))
    assert done.returncode == 0, done.stderr
    outcome = json.loads(path.read_text())
    assert (outcome["before"], outcome["after"]) == (ROOT, other)
    assert [pair["first"] for pair in outcome["pairs"]] == ["before", "after"]  # the start order alternates
    for pair in outcome["pairs"]:
        for side in ("before", "after"):
            assert pair[side]["failures"] == 0 and pair[side]["rate"] > 0
            assert pair[side]["server_cpu_ms_per_enrolment"] > 0
        assert pair["ratio"] == round(pair["after"]["server_cpu_ms_per_enrolment"]
                                      / pair["before"]["server_cpu_ms_per_enrolment"], 4)
    assert outcome["median_ratio"] == round(statistics.median(pair["ratio"] for pair in outcome["pairs"]), 4)
    assert f"median after / before: {outcome['median_ratio']:.3f}" in done.stdout
    assert done.stdout.count("pair ") == 2
    assert not os.listdir(work), "scratch stores must be removed"


def test_each_side_runs_its_own_checkout_and_a_failure_is_named(tmp_path):
    other = _copy_of_checkout(tmp_path / "other")
    enrolment = os.path.join(other, "bench", "enrolment.py")
    with open(enrolment, "a", encoding="utf-8") as handle:
        handle.write("\n\ndef run_load(*_args, **_kwargs):\n    raise SystemExit('this checkout cannot enrol')\n")
    done = _ab(ROOT, other, *TINY, "--pairs", "1")
    assert done.returncode == 1
    assert "bench.ab: the after run failed" in done.stderr and "this checkout cannot enrol" in done.stderr
    assert "median" not in done.stdout


def test_bad_arguments_name_the_argument_and_the_rule(tmp_path):
    cases = {
        (str(tmp_path), ROOT): "argument BEFORE: {} is not a checkout of opencapf.capf".format(tmp_path),
        (ROOT, ROOT, "--pairs", "0"): "argument --pairs: 0 must be at least 1",
        (ROOT, ROOT, "--size", "many"): "argument --size: 'many' is not a whole number",
        (ROOT, ROOT, "--key-type", "dsa"): "argument --key-type: invalid choice: 'dsa'",
        (ROOT, ROOT, "--work-dir", str(tmp_path / "missing")): f"--work-dir: {tmp_path / 'missing'} is not a directory",
        (ROOT, ROOT, "--json", str(tmp_path / "missing" / "ab.json")):
            f"--json: the directory of {tmp_path / 'missing' / 'ab.json'} does not exist",
    }
    for args, message in cases.items():
        done = _ab(*args, timeout=60)
        assert done.returncode == 2, args
        assert message in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr
