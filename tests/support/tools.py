"""Run the real CLI and the openssl command line from tests."""

from __future__ import annotations

import hashlib
import os
import stat
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


def snapshot(directory: str) -> dict:
    """Every entry under ``directory`` (itself included): type, mode, modification time and content."""
    entries = {}
    for root, dirs, files in os.walk(directory):
        for name in ["."] + dirs + files if root == directory else dirs + files:
            path = os.path.normpath(os.path.join(root, name))
            status = os.lstat(path)
            content = None
            if stat.S_ISREG(status.st_mode):
                with open(path, "rb") as handle:
                    content = hashlib.sha256(handle.read()).hexdigest()
            entries[os.path.relpath(path, directory)] = (stat.S_IFMT(status.st_mode), stat.S_IMODE(status.st_mode),
                                                         status.st_mtime_ns, content)
    return entries
