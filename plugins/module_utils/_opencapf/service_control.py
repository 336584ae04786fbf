# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Starting, stopping and checking the CAPF daemon (and, with the online CA, its enrolment service).

The daemon is ``python -m _opencapf --store S serve --daemon --pid-file P --log-file L`` run from a
copy of the engine extracted into ``<state dir>/engine`` (the module's own copy lives in a
temporary zip). Starting is only done when the port really accepts a TLS handshake; stopping sends
SIGTERM to the process in the pid file after checking that it is an opencapf process; reloading
sends it SIGHUP (it reads its parameters and CAPF certificate again and reopens its log file).

This module starts no process itself (ansible-test forbids ``subprocess`` in module_utils): the
caller passes a ``launcher(argv, env) -> (rc, stdout, stderr)``, e.g. ``AnsibleModule.run_command``.
"""

from __future__ import annotations

import errno
import hashlib
import os
import pkgutil
import shutil
import signal
import socket
import ssl
import sys
import time
import zipfile
from typing import Any, Callable

from . import __version__, bundle
from .errors import CapfError, ValidationError
from .files import ensure_private_dir
from .results import converged
from .store import Store
from .store import service as service_records
from .vocabulary import check_choice

STATES = ("started", "stopped", "restarted", "reloaded")
PID_FILE = "capf.pid"
LOG_FILE = "capf.log"
ENGINE_DIR = "engine"
STAMP_FILE = ".opencapf-engine"
PACKAGE = __name__.rsplit(".", 1)[0]
PACKAGE_NAME = "_opencapf"

Launcher = Callable[[list, dict], tuple]


def paths(store: Store) -> dict[str, str]:
    return {
        "pid_file": os.path.join(store.state_dir, PID_FILE),
        "log_file": os.path.join(store.state_dir, LOG_FILE),
        "engine_root": os.path.join(store.state_dir, ENGINE_DIR),
    }


def _package_file(relative: str) -> bytes:
    """One engine file from wherever this package was imported: a directory or a zip."""
    try:
        data = pkgutil.get_data(PACKAGE, relative)
    except (OSError, ValueError, ImportError):
        data = None
    if data is not None:
        return data
    here = os.path.dirname(os.path.abspath(__file__))
    candidate = os.path.join(here, relative)
    if os.path.isfile(candidate):
        with open(candidate, "rb") as handle:
            return handle.read()
    # Inside a zip: split the path at the archive.
    marker = ".zip" + os.sep
    if marker in here:
        archive, inner = here.split(marker, 1)
        with zipfile.ZipFile(archive + ".zip") as zipped:
            return zipped.read(inner.replace(os.sep, "/") + "/" + relative)
    raise CapfError(f"engine file {relative} cannot be read from {here}")


def engine_files() -> dict[str, bytes]:
    return {relative: _package_file(relative) for relative in bundle.PACKAGE_FILES}


def _stamp(files: dict[str, bytes]) -> str:
    digest = hashlib.sha256()
    for relative in sorted(files):
        digest.update(relative.encode() + b"\x00" + files[relative] + b"\x00")
    return f"{__version__} {digest.hexdigest()}\n"


def extract_engine(engine_root: str) -> tuple[str, bool]:
    """Copy the engine to ``engine_root/_opencapf`` (0700) unless the same version is there;
    return (the directory to put on PYTHONPATH, whether files were written)."""
    files = engine_files()
    stamp = _stamp(files)
    target = os.path.join(engine_root, PACKAGE_NAME)
    stamp_path = os.path.join(engine_root, STAMP_FILE)
    try:
        with open(stamp_path, encoding="ascii") as handle:
            if handle.read() == stamp and os.path.isdir(target):
                return engine_root, False
    except OSError:
        pass
    ensure_private_dir(engine_root)
    staging = os.path.join(engine_root, f".{PACKAGE_NAME}.{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    for relative, data in files.items():
        path = os.path.join(staging, *relative.split("/"))
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(data)
    os.chmod(staging, 0o700)
    old = os.path.join(engine_root, f".{PACKAGE_NAME}.old.{os.getpid()}")
    if os.path.isdir(target):
        os.replace(target, old)
    os.replace(staging, target)
    shutil.rmtree(old, ignore_errors=True)
    with open(stamp_path, "w", encoding="ascii") as handle:
        handle.write(stamp)
    return engine_root, True


def start_command(store: Store, python: str | None = None) -> tuple[list[str], dict[str, str]]:
    """The daemon's command line and the environment it needs (engine on PYTHONPATH). Run it with
    the state directory as working directory: the module's own directory is deleted when it ends."""
    where = paths(store)
    # -P: the working directory must not shadow the extracted engine (Python 3.11+).
    argv = [python or sys.executable, "-P", "-m", PACKAGE_NAME, "--store", store.location, "serve", "--daemon",
            "--pid-file", where["pid_file"], "--log-file", where["log_file"]]
    env = {"PYTHONPATH": where["engine_root"], "OPENCAPF_STATE_DIR": store.state_dir}
    return argv, env


def read_pid(pid_file: str) -> int | None:
    try:
        with open(pid_file, encoding="ascii") as handle:
            text = handle.read(32).strip()
    except OSError:
        return None
    return int(text) if text.isdigit() and int(text) > 1 else None


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno == errno.EPERM
    try:  # a zombie has exited; only its parent has not collected it yet
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            return handle.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _is_ours(pid: int) -> bool:
    """On Linux, check that the pid is an opencapf process (not a recycled pid)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            command = handle.read()
    except OSError:
        return True  # no /proc: trust the pid file
    return b"opencapf" in command or PACKAGE_NAME.encode() in command


def _probe_address(address: str) -> str:
    return {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(address, address)


def accepts_tls(host: str, port: int, timeout: float = 2.0) -> bool:
    """Whether a TLS handshake with host:port completes (the certificate is not checked)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            with context.wrap_socket(raw, server_hostname=None):
                return True
    except (OSError, ssl.SSLError):
        return False


def status(store: Store) -> dict[str, Any]:
    """Process and listener state: running (pid alive), accepting (TLS handshake on the port)."""
    with store.read() as tx:
        values = service_records.read(tx)
    pid = read_pid(paths(store)["pid_file"])
    running = pid_alive(pid) and _is_ours(pid)
    host = _probe_address(values["listen_addresses"][0])
    accepting = accepts_tls(host, values["port"])
    return {
        "state": "started" if running and accepting else "stopped",
        "pid": pid if running else None,
        "running": running,
        "accepting": accepting,
        "address": host,
        "port": values["port"],
        "enrolment_service": "active" if running and accepting and values["issuer"] == "online_ca" else "inactive",
    }


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def _log_tail(log_file: str, lines: int = 5) -> str:
    try:
        with open(log_file, encoding="utf-8", errors="replace") as handle:
            return " | ".join(handle.read()[-4000:].strip().splitlines()[-lines:])
    except OSError:
        return ""


def stop(store: Store, timeout: float = 15.0) -> bool:
    """SIGTERM the daemon and wait for it to exit; return whether one was running."""
    pid_file = paths(store)["pid_file"]
    pid = read_pid(pid_file)
    if not pid_alive(pid) or not _is_ours(pid):
        return False
    os.kill(pid, signal.SIGTERM)
    if not wait_until(lambda: not pid_alive(pid), timeout):
        raise CapfError(f"the CAPF service (pid {pid}) did not stop within {timeout:g} seconds after SIGTERM")
    try:
        os.unlink(pid_file)
    except FileNotFoundError:
        pass
    return True


def reload(store: Store) -> bool:
    """SIGHUP the daemon; return whether one was running. It goes on serving: it reads the service
    parameters and the CAPF certificate again and reopens its log file."""
    pid = read_pid(paths(store)["pid_file"])
    if not pid_alive(pid) or not _is_ours(pid):
        return False
    os.kill(pid, signal.SIGHUP)
    return True


def start(store: Store, launcher: Launcher, timeout: float = 30.0, python: str | None = None) -> dict[str, Any]:
    """Extract the engine, launch the daemon and return once the port accepts TLS."""
    where = paths(store)
    extract_engine(where["engine_root"])
    argv, env = start_command(store, python)
    rc, out, err = launcher(argv, env)
    if rc != 0:
        detail = (err or out or "").strip().splitlines()
        raise CapfError("the CAPF service did not start (exit status %s): %s" % (rc, detail[-1] if detail else
                                                                                 _log_tail(where["log_file"])))
    if not wait_until(lambda: status(store)["state"] == "started", timeout):
        raise CapfError(f"the CAPF service did not accept TLS connections within {timeout:g} seconds; "
                        f"log: {_log_tail(where['log_file']) or where['log_file']}")
    return status(store)


def converge(store: Store, state: str, launcher: Launcher, *, check_mode: bool = False, timeout: float = 30.0,
             python: str | None = None) -> dict[str, Any]:
    """started: running and accepting; stopped: not running; restarted: stop (if running) and start;
    reloaded: SIGHUP when running, else start."""
    state = check_choice("state", state, STATES)
    if timeout <= 0:
        raise ValidationError("timeout", "must be a positive number of seconds", timeout)
    before = status(store)
    if state == "started" and before["state"] == "started":
        return converged(False, {"state": before["state"]}, {"state": "started"}, service=before)
    if state == "stopped" and not before["running"]:
        return converged(False, {"state": before["state"]}, {"state": "stopped"}, service=before)
    target = "stopped" if state == "stopped" else "started"
    if check_mode:
        return converged(True, {"state": before["state"]}, {"state": target}, service=before)
    if state == "reloaded" and before["running"] and reload(store):
        if not wait_until(lambda: status(store)["state"] == "started", timeout):
            raise CapfError(f"the CAPF service did not accept TLS connections within {timeout:g} seconds after "
                            f"SIGHUP; log: {_log_tail(paths(store)['log_file']) or paths(store)['log_file']}")
        after = status(store)
        return converged(True, {"state": before["state"]}, {"state": after["state"]}, service=after)
    if state in ("stopped", "restarted") or before["running"]:
        stop(store, timeout)
    after = start(store, launcher, timeout, python) if target == "started" else status(store)
    return converged(True, {"state": before["state"]}, {"state": after["state"]}, service=after)
