"""Named crash points: inert without OPENCAPF_CRASH_AT, SIGKILL at the chosen pass with it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from support.tools import ENGINE_PATH
from _opencapf import faults
from _opencapf.errors import ValidationError

CHILD = """import sys
sys.path.insert(0, sys.argv[1])
from _opencapf import faults
for n in range(1, 6):
    faults.checkpoint("lsc.signed")
    faults.checkpoint("bulk.updated")
    print(n, flush=True)
"""


def _run(crash_at):
    env = {key: value for key, value in os.environ.items() if key != faults.ENV_CRASH_AT}
    if crash_at is not None:
        env[faults.ENV_CRASH_AT] = crash_at
    return subprocess.run([sys.executable, "-c", CHILD, ENGINE_PATH], env=env, capture_output=True, text=True,
                          check=False, timeout=60)


def test_without_the_variable_every_checkpoint_passes():
    result = _run(None)
    assert (result.returncode, result.stdout.split()) == (0, ["1", "2", "3", "4", "5"])


def test_the_process_is_killed_at_the_chosen_pass():
    result = _run("lsc.signed:3")
    assert (result.returncode, result.stdout.split()) == (-signal.SIGKILL, ["1", "2"])


def test_the_first_of_several_points_kills():
    result = _run("lsc.signed:4,bulk.updated:2")
    assert (result.returncode, result.stdout.split()) == (-signal.SIGKILL, ["1"])


@pytest.mark.parametrize("value, words", [("lsc.sigend:1", "unknown crash point 'lsc.sigend'"),
                                          ("lsc.signed", "NAME:N with N >= 1"), ("lsc.signed:0", "N >= 1")])
def test_a_wrong_plan_is_refused_naming_the_variable(value, words):
    with pytest.raises(ValidationError) as raised:
        faults._parse(value)  # pylint: disable=protected-access
    assert faults.ENV_CRASH_AT in str(raised.value) and words in str(raised.value)


def test_every_point_is_documented():
    assert set(faults.POINTS) >= {"lsc.signed", "lsc.committed", "install.recording", "install.committed",
                                  "session.recorded", "migration.statement", "bulk.updated"}
    assert all(faults.POINTS.values())
