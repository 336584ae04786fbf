"""Run the real CLI with its standard error on a pseudo-terminal, as an operator's shell would."""

from __future__ import annotations

import errno
import os
import pty
import subprocess
import sys
import tempfile

from support.tools import ENGINE_PATH


def run_cli_on_terminal(*args, timeout=120):
    """Run ``opencapf ARGS`` with standard error on a pty (standard output a pipe); return
    (exit status, standard output, everything written to the terminal)."""
    controller, terminal = pty.openpty()
    environment = dict(os.environ, PYTHONPATH=ENGINE_PATH, TERM="xterm")
    # Standard output goes to a file: a pipe left unread while the terminal is read could fill and stall the child.
    output = tempfile.TemporaryFile()
    try:
        child = subprocess.Popen([sys.executable, "-m", "_opencapf", *args], stdin=subprocess.DEVNULL,
                                 stdout=output, stderr=terminal, env=environment)
    finally:
        os.close(terminal)
    written = bytearray()
    try:
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError as exc:  # the child closed its side of the terminal
                if exc.errno != errno.EIO:
                    raise
                break
            if not chunk:
                break
            written += chunk
        child.wait(timeout=timeout)
        output.seek(0)
        out = output.read()
    finally:
        os.close(controller)
        output.close()
    return child.returncode, out.decode(), written.decode(errors="replace")
