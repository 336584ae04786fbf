"""Run the real CLI and the openssl command line from tests."""

from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLI = os.path.join(ROOT, "scripts", "opencapf")
ENGINE_PATH = os.path.join(ROOT, "plugins", "module_utils")


def run_cli(*args, check=False, env=None, timeout=120):
    """Run the real CLI in a child process; return the CompletedProcess (text)."""
    environment = dict(os.environ if env is None else env)
    environment["PYTHONPATH"] = ENGINE_PATH
    result = subprocess.run([sys.executable, "-m", "_opencapf", *args], capture_output=True, text=True,
                            env=environment, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"opencapf {' '.join(args)} failed ({result.returncode}): {result.stderr}")
    return result


def openssl(*args, input_bytes=None, check=True):
    result = subprocess.run(["openssl", *args], capture_output=True, input=input_bytes, timeout=60, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"openssl {' '.join(args)} failed: {result.stderr.decode(errors='replace')}")
    return result
