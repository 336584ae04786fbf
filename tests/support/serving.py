"""``opencapf serve`` as a child process of a test, on a store of either backend: start it, wait until it
reports its port, kill or stop it, read its log; and the waits the tests around it share."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time

from support.tools import ENGINE_PATH
from _opencapf.faults import ENV_CRASH_AT

START_SECONDS = 60


class Serving:
    """One ``opencapf serve`` process listening on 127.0.0.1, on the store at ``location`` (an SQLite file
    or a PostgreSQL connection string) with its key files in ``state_dir``. Its stderr goes to the file
    ``log_path`` (appended: a restart keeps the earlier lines; a pipe nobody reads would stall it).
    ``port`` 0 takes a free one; once started, a restart listens on the same port again. ``env``: the
    environment to start from (default this process's), without a crash point unless ``start`` sets one.
    ``cli_options``: global options of the command line before ``serve`` (e.g. ``-v``). ``processes``: the
    ``--processes`` it starts with unless ``start`` names one; one process by default (cheap on a small test
    machine, and what most tests are about), None to leave it to the ``processes`` service parameter.
    ``python_path``: directories searched before the engine's (e.g. one that shadows an installed package)."""

    def __init__(self, location: str, state_dir: str | None, log_path, *, port: int = 0, env: dict | None = None,
                 name: str = "serve", cli_options: tuple = (), processes: int | None = 1, python_path: tuple = ()):
        self.location, self.state_dir = location, state_dir
        self.log_path = str(log_path)
        self.port = port
        self.name = name
        self.cli_options = tuple(cli_options)
        self.python_path = tuple(str(path) for path in python_path)
        self.processes = processes
        self.env = dict(os.environ if env is None else env)
        self.process: subprocess.Popen | None = None

    @classmethod
    def on(cls, store, log_path, **kwargs) -> "Serving":
        """A service on the same store as the open ``store``, whichever its backend."""
        return cls(store.location, store.state_dir, log_path, **kwargs)

    def command(self, *extra: str) -> list[str]:
        state = ["--state-dir", self.state_dir] if self.state_dir else []
        processes = ["--processes", str(self.processes)] if self.processes is not None and "--processes" not in extra \
            else []
        return [sys.executable, "-m", "_opencapf", "--store", self.location, *state, *self.cli_options, "serve",
                "--listen", "127.0.0.1", "--port", str(self.port), *processes, *extra]

    def start(self, *extra: str, crash_at: str | None = None) -> "Serving":
        """Start it with the ``serve`` options ``extra``; return once it listens (``crash_at``: the fault
        point at which it kills itself, see ``_opencapf.faults``)."""
        env = {**self.env, "PYTHONPATH": os.pathsep.join([*self.python_path, ENGINE_PATH])}
        env.pop(ENV_CRASH_AT, None)
        if crash_at:
            env[ENV_CRASH_AT] = crash_at
        with open(self.log_path, "a", encoding="utf-8") as log:
            self.process = subprocess.Popen(self.command(*extra), stdout=subprocess.PIPE, stderr=log, text=True,
                                            env=env)
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            line = self.process.stdout.readline() if selector.select(START_SECONDS) else ""
        if not line.startswith("listening on"):
            self.process.kill()
            self.process.communicate()
            raise AssertionError(f"{self.name} did not start: {line!r}\n{self.log()}")
        self.port = int(line.split()[-1])
        return self

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> int:
        """SIGKILL: the service dies mid-work, as in a power loss of its host; its exit status."""
        self.process.send_signal(signal.SIGKILL)
        return self.process.wait(30)

    def stop(self) -> int | None:
        """SIGTERM, as an operator stops it, and wait for it to end (SIGKILL after 60 s); its exit status."""
        return stop_all([self])[0] if self.process is not None else None

    def log(self) -> str:
        if not os.path.exists(self.log_path):
            return ""
        with open(self.log_path, encoding="utf-8") as handle:
            return handle.read()

    def __enter__(self) -> "Serving":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def stop_all(servings: list[Serving]) -> list[int | None]:
    """Stop the live ones together (SIGTERM to each, then wait); every one's exit status."""
    live = [serving for serving in servings if serving.alive()]
    for serving in live:
        serving.process.send_signal(signal.SIGTERM)
    for serving in live:
        try:
            serving.process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            serving.process.kill()
            serving.process.communicate()
    return [serving.process.returncode if serving.process is not None else None for serving in servings]


def children(pid: int) -> list[int]:
    """The child processes of ``pid`` (a supervisor's workers), in pid order."""
    with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as handle:
        return sorted(int(child) for child in handle.read().split())


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, ended but not yet reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            return handle.read().split(") ")[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_for(predicate, timeout: float, interval: float = 0.2) -> bool:
    """Whether ``predicate()`` comes true within ``timeout`` seconds (asked a last time at the end)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def wait_gone(pid: int, timeout: float = 20) -> bool:
    """Whether the process ``pid`` (not a child of the test: a daemon) has ended within ``timeout`` seconds."""

    def gone():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    return wait_for(gone, timeout, 0.05)
