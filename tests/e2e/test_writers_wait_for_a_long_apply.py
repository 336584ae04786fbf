"""A long atomic change of an SQLite store (what ``opencapf apply`` of a large declarative file does)
holds the store's write lock for longer than SQLite's busy timeout: a CLI command that writes meanwhile
waits its turn and succeeds once the change commits, and a CLI command that reads is not held up.

Real processes throughout: the change is held open by a child process through the public store API,
the writer and the reader are the real CLI (``opencapf apply`` of a small file, ``opencapf phones
list``). The hold outlasts the busy timeout, so the test takes a little longer than it (about 35 s).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

from _opencapf.store.sqlite import BUSY_TIMEOUT_MS
from support.tools import ENGINE_PATH, run_cli

HOLD_SECONDS = BUSY_TIMEOUT_MS / 1000 + 3

HOLDER = textwrap.dedent("""\
    import sys, time
    from _opencapf.phone_config import PhoneRequest, converge_many
    from _opencapf.store import open_store
    location, state_dir, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    with open_store(location, state_dir=state_dir, actor="holder", create=False) as store:
        with store.atomic() as tx:
            converge_many(tx, "holder", b"", [(None, PhoneRequest("SEP0000000000A1", {}))], via="capf_phone")
            print("holding", flush=True)
            time.sleep(seconds)
            print(f"committing {time.time()!r}", flush=True)
""")

SMALL_FILE = """\
opencapf: 1
phones:
  - name: SEP0000000000B2
    certificate_operation: install_upgrade
    authentication_mode: null_string
"""


def _cli(*args) -> subprocess.Popen:
    environment = dict(os.environ, PYTHONPATH=ENGINE_PATH)
    return subprocess.Popen([sys.executable, "-m", "_opencapf", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=environment)


def test_a_cli_writer_waits_for_a_long_change_and_succeeds_while_readers_go_on(store_path, tmp_path):
    store = ["--store", store_path, "--state-dir", os.path.dirname(store_path)]
    run_cli(*store, "init", check=True)
    deployment = tmp_path / "small.yml"
    deployment.write_text(SMALL_FILE)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, store_path, os.path.dirname(store_path),
                               str(HOLD_SECONDS)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=dict(os.environ, PYTHONPATH=ENGINE_PATH))
    writer = None
    try:
        assert holder.stdout.readline().strip() == "holding", holder.stderr.read()
        held_since = time.time()
        writer = _cli(*store, "--json", "apply", str(deployment))
        # A reader goes on at once, and sees none of the change in progress.
        started = time.monotonic()
        listed = run_cli(*store, "--json", "phones", "list", timeout=60)
        assert listed.returncode == 0, listed.stderr
        assert time.monotonic() - started < HOLD_SECONDS / 2, "the reader did not wait for the writer"
        assert json.loads(listed.stdout) == []
        written_out, written_err = writer.communicate(timeout=HOLD_SECONDS + 60)
        done = time.time()
        holder_out, holder_err = holder.communicate(timeout=60)
    finally:
        for process in (holder, writer):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
    assert holder.returncode == 0, holder_err
    committing = float(holder_out.split()[-1])
    assert writer.returncode == 0, f"the writer failed instead of waiting its turn: {written_err}"
    assert committing - held_since > BUSY_TIMEOUT_MS / 1000, "the change held the lock beyond the busy timeout"
    assert done >= committing, "the writer finished only once the change was committing"
    assert json.loads(written_out)["counts"]["phones"]["created"] == 1
    listed = json.loads(run_cli(*store, "--json", "phones", "list", check=True).stdout)
    assert sorted(phone["device_name"] for phone in listed) == ["SEP0000000000A1", "SEP0000000000B2"]
