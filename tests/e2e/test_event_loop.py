"""The event loop of the CAPF service (``serve --event-loop``, the ``event_loop`` service parameter): auto runs on
uvloop where it is installed and on asyncio where it is not, each choice is what the service says it runs on, and
an unknown loop or a uvloop that is not installed stops the start with one line naming the option."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from support.serving import Serving
from support.tools import ENGINE_PATH
from _opencapf import parameters
from _opencapf.errors import ValidationError
from _opencapf.server import event_loop
from _opencapf.store import service as service_records


@pytest.fixture
def without_uvloop(tmp_path):
    """A directory that, searched first, makes ``import uvloop`` fail, as on a host where it is not installed."""
    shadow = tmp_path / "no-uvloop"
    (shadow / "uvloop").mkdir(parents=True)
    (shadow / "uvloop" / "__init__.py").write_text("raise ImportError(\"No module named 'uvloop'\")\n")
    return str(shadow)


def _serve(store, python_path, *options):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*python_path, ENGINE_PATH])}
    return subprocess.run([sys.executable, "-m", "_opencapf", "--store", store.location, "serve", "--listen",
                           "127.0.0.1", "--port", "0", *options], capture_output=True, text=True, env=env,
                          timeout=60, check=False)


def _set_loop(store, value):
    with store.transaction() as tx:
        service_records.write(tx, "test", {"event_loop": value})


def test_uvloop_where_it_is_not_installed_is_refused_in_one_line_naming_the_option(ca_store, without_uvloop):
    done = _serve(ca_store, [without_uvloop], "--event-loop", "uvloop")
    assert done.returncode == 1 and done.stdout == ""
    (line,) = done.stderr.strip().splitlines()
    assert "--event-loop uvloop is not installed on this host (pip install uvloop==" in line, line
    assert "choose auto or asyncio" in line and "Traceback" not in done.stderr
    _set_loop(ca_store, "uvloop")
    done = _serve(ca_store, [without_uvloop])
    (line,) = done.stderr.strip().splitlines()
    assert done.returncode == 1 and "the event_loop service parameter uvloop is not installed" in line, line


def test_an_unknown_event_loop_is_refused_naming_the_option(ca_store):
    done = _serve(ca_store, [], "--event-loop", "trio")
    assert done.returncode == 2 and "--event-loop: invalid choice: 'trio'" in done.stderr, done.stderr
    with pytest.raises(ValidationError, match=r"^event_loop must be one of auto, asyncio, uvloop, got 'trio'$"):
        parameters.check("event_loop", "trio")
    with pytest.raises(ValidationError, match=r"^--event-loop must be one of auto, asyncio, uvloop, got 'trio'$"):
        event_loop.resolve("trio", "--event-loop")


@pytest.mark.parametrize("choice, shadowed, runs_on", [
    ("auto", False, "uvloop"), ("auto", True, "asyncio"), ("asyncio", False, "asyncio"), ("uvloop", False, "uvloop"),
])
def test_the_service_runs_on_the_loop_chosen_and_says_so(ca_store, tmp_path, without_uvloop, choice, shadowed,
                                                         runs_on):
    _set_loop(ca_store, choice)
    shadow = (without_uvloop,) if shadowed else ()
    with Serving.on(ca_store, tmp_path / "serve.log", python_path=shadow).start("--enrolment-interval", "0") as serving:
        pass
    assert serving.returncode == 0
    log = serving.log()
    assert f"runs on the {runs_on} event loop" in log and "Traceback" not in log, log
