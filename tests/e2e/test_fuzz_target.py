"""The protocol fuzz target (tests/fuzz): its seeds are real sessions, its past crashes stay fixed,
and a short coverage-guided run (atheris) finds nothing. The long run is ``scripts/fuzz --long``."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

FUZZ = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fuzz")
if FUZZ not in sys.path:
    sys.path.insert(0, FUZZ)

import capf_session as world  # noqa: E402  pylint: disable=wrong-import-position

SHORT_RUN_SECONDS = 20


@pytest.fixture(scope="module")
def fuzz_store(tmp_path_factory):
    store = world.build_store(str(tmp_path_factory.mktemp("fuzz-store")))
    yield store
    store.close()


def test_every_scenario_has_a_seed():
    assert sorted(os.listdir(world.SEEDS)) == sorted(world.SCENARIOS)


@pytest.mark.parametrize("seed", sorted(world.SCENARIOS))
def test_each_seed_replays_as_the_session_it_recorded(fuzz_store, seed):
    world.reset(fuzz_store)
    with open(os.path.join(world.SEEDS, seed), "rb") as handle:
        server = world.run_one(fuzz_store, handle.read())
    expected = world.SCENARIOS[seed][2]
    assert server.outcome.outcome == expected, server.outcome.reason


@pytest.mark.parametrize("name", sorted(os.listdir(os.path.join(FUZZ, "regressions"))))
def test_inputs_that_once_crashed_end_in_a_protocol_outcome(fuzz_store, name):
    """Each input twice: some crashes needed what the first run left in the store."""
    with open(os.path.join(FUZZ, "regressions", name), "rb") as handle:
        data = handle.read()
    for _time in range(2):
        world.reset(fuzz_store)
        server = world.run_one(fuzz_store, data)  # raises what once escaped the session
        assert server.closed and server.outcome.outcome and server.outcome.end_reason is not None


def test_short_coverage_guided_run_finds_nothing(tmp_path):
    work = tmp_path / "corpus"
    work.mkdir()
    done = subprocess.run(
        [sys.executable, os.path.join(FUZZ, "fuzz_protocol.py"), str(work), world.SEEDS,
         f"-max_total_time={SHORT_RUN_SECONDS}", "-seed=1", f"-artifact_prefix={tmp_path}/", "-print_final_stats=1"],
        cwd=FUZZ, capture_output=True, text=True, timeout=SHORT_RUN_SECONDS + 120, check=False)
    report = done.stderr[-3000:]
    assert done.returncode == 0, report
    assert not [name for name in os.listdir(tmp_path) if name.startswith(("crash-", "timeout-", "oom-"))], report
    assert "stat::number_of_executed_units" in done.stderr
