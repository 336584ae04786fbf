# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Several server processes behind one port: the supervisor binds, forks and watches.

The supervisor (the process ``serve`` started, or the daemon) reads the listening parameters,
binds the listening sockets once and forks one worker process per ``processes`` (``processes`` 0:
one per usable core, see ``automatic_processes``). Each worker runs the service (``service.serve``)
on its own event loop (``event_loop``: asyncio or uvloop, created after the fork), on its own
sockets with its own store connection; SQLite
in WAL mode with ``BEGIN IMMEDIATE`` and a busy timeout serialises their writes, and the unique
(issuer, serial) index keeps serials unique across them. Only the first worker runs the
certificate enrolment service, so pending online CA requests are polled once, and only it serves
the metrics endpoint (``metrics``: every worker counts into one directory, the endpoint sums them).

The supervisor forwards SIGTERM and SIGINT to every worker and waits for them to finish their
sessions. It forwards SIGHUP too, after reopening its own log file: each worker then reopens its
log file and reads the service parameters and the CAPF certificate again, and goes on serving.
A worker that dies on its own is replaced on the same sockets (connections waiting in its queue
are then served by the replacement); a worker that keeps dying within seconds of its start stops
the whole service with an error. Every worker runs the scheduler's loop; the store's
``scheduler`` lead lets one of them do the work.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import ipaddress
import json
import logging
import os
import signal
import time

from ..errors import CapfError
from ..sockets import bind_listeners, can_share_port, prefer_cpu
from ..store import Store
from ..store import service as service_records
from ..vocabulary import AUTOMATIC_PROCESSES_CAP
from . import event_loop, metrics
from .service import ServerOptions, serve

log = logging.getLogger("opencapf.server")
QUICK_DEATH_SECONDS = 10.0  # a worker that dies sooner than this after its start died "quickly"
MAX_QUICK_DEATHS = 5  # in a row: then the service gives up instead of restarting forever
STOP_GRACE_SECONDS = 30.0  # how long workers get to finish their sessions after SIGTERM


def usable_cores() -> int:
    """The CPU cores this process may run on: its affinity mask (``taskset``, systemd's
    ``CPUAffinity=``, a container's cpuset), else every core of the machine."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def automatic_processes() -> int:
    """The worker processes ``processes`` 0 (the default) starts: one per usable core, at most
    ``AUTOMATIC_PROCESSES_CAP``."""
    return min(usable_cores(), AUTOMATIC_PROCESSES_CAP)


def listen_plan(store: Store, options: ServerOptions) -> tuple[list[str], int]:
    """The addresses and port the service listens on (IPv6 addresses only with enable_ipv6)."""
    with store.read() as tx:
        parameters = service_records.read(tx)
    addresses = []
    for address in list(options.addresses or parameters["listen_addresses"]):
        if ipaddress.ip_address(address).version == 6 and not parameters["enable_ipv6"]:
            log.warning("not listening on %s: the enable_ipv6 service parameter is false", address)
            continue
        addresses.append(address)
    if not addresses:
        raise CapfError("listen_addresses leaves nothing to listen on (IPv6 addresses need enable_ipv6)")
    port = parameters["port"] if options.port is None else options.port
    return addresses, port


@dataclasses.dataclass
class _Worker:
    index: int
    pid: int = 0
    started: float = 0.0
    ready_fd: int | None = None


class Supervisor:
    """Run ``processes`` workers; ``open_store()`` gives each worker its own store connection."""

    def __init__(self, open_store, options: ServerOptions, processes: int, private_fds=(), cpu_affinity: bool = False,
                 on_hangup=None, loop: str = "asyncio"):
        self.open_store = open_store
        self.loop = loop  # the event loop each worker runs on (event_loop.resolve: asyncio or uvloop)
        self.on_hangup = on_hangup or (lambda: None)  # in each process on SIGHUP, before the reload (the log file)
        self.cpu_affinity = cpu_affinity
        self.private_fds = tuple(private_fds)  # the supervisor's own (the daemon's start-up pipe): workers close them
        self.options = options
        self.processes = processes
        self.groups: list[list] = []
        self.workers: list[_Worker] = []
        self.stopping = False
        self.quick_deaths = 0

    def run(self, ready=None) -> int:
        """Bind, start every worker, call ``ready(bound)`` once all listen, supervise until SIGTERM or
        SIGINT. Return 0 when every worker stopped cleanly."""
        store = self.open_store()
        try:
            addresses, port = listen_plan(store, self.options)
        finally:
            store.close()  # no SQLite connection may cross a fork
        self.groups = bind_listeners(addresses, port, self.processes)
        bound = [tuple(sock.getsockname()[:2]) for sock in self.groups[0]]
        watched = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD}
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, watched)
        try:
            self.workers = [_Worker(index) for index in range(self.processes)]
            for worker in self.workers:
                self._start(worker, previous, report=True)
            self._await_ready()
            log.info("CAPF service: %d worker processes (pids %s)%s", self.processes,
                     ", ".join(str(worker.pid) for worker in self.workers),
                     "" if can_share_port() else " sharing one listening socket")
            if ready is not None:
                ready(bound)
            return self._supervise(watched, previous)
        except BaseException:
            self._stop_all()
            raise
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
            for group in {id(group): group for group in self.groups}.values():
                for sock in group:
                    sock.close()

    # -- workers ------------------------------------------------------------------------------

    def _start(self, worker: _Worker, mask, report: bool) -> None:
        read_end, write_end = os.pipe() if report else (None, None)
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                for fd in ((read_end,) if read_end is not None else ()) + self.private_fds:
                    _close(fd)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the worker reloads on it
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)
                code = self._work(worker.index, write_end)
            except BaseException as exc:  # pylint: disable=broad-except
                if write_end is not None:
                    _report(write_end, {"error": str(exc) or exc.__class__.__name__})
                log.error("CAPF worker %d (pid %d) failed: %s", worker.index, os.getpid(), exc)
            finally:
                logging.shutdown()
                os._exit(code)
        if write_end is not None:
            os.close(write_end)
        worker.pid, worker.started, worker.ready_fd = pid, time.monotonic(), read_end

    def _work(self, index: int, ready_fd: int | None) -> int:
        for position, group in enumerate(self.groups):
            if position != index and group is not self.groups[index]:
                for sock in group:
                    sock.close()
        core = self._core(index)
        if core is not None:
            os.sched_setaffinity(0, {core})
            for sock in self.groups[index]:
                prefer_cpu(sock, core)
        options = dataclasses.replace(self.options, sockets=tuple(self.groups[index]), addresses=None,
                                      enrolment_interval=self.options.enrolment_interval if index == 0 else 0.0,
                                      metrics_address=self.options.metrics_address if index == 0 else "",
                                      crl_http=self.options.crl_http and index == 0)

        def ready(_bound):
            if ready_fd is not None:
                _report(ready_fd, {"pid": os.getpid()})

        async def main() -> int:
            loop = asyncio.get_running_loop()
            stop, reload = asyncio.Event(), asyncio.Event()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, stop.set)
            loop.add_signal_handler(signal.SIGHUP, lambda: (self.on_hangup(), reload.set()))
            store = self.open_store()
            try:
                return await serve(store, options, ready=ready, stop_event=stop, reload_event=reload)
            finally:
                store.close()

        served = event_loop.run(main(), self.loop)
        log.info("CAPF worker %d (pid %d) stopped after serving %d sessions", index, os.getpid(), served)
        return 0

    def _core(self, index: int) -> int | None:
        """The CPU worker ``index`` keeps to with ``cpu_affinity``: with at most one worker per usable
        CPU and a socket of its own per worker (SO_REUSEPORT), worker i runs on the i-th CPU and its
        sockets prefer the connections that CPU receives, so a connection's packets, wake-ups and
        session stay on one CPU. None (no pinning) otherwise."""
        if not self.cpu_affinity or not hasattr(os, "sched_setaffinity") \
                or len({id(group) for group in self.groups}) < self.processes:
            return None
        cores = sorted(os.sched_getaffinity(0))
        return cores[index] if self.processes <= len(cores) else None

    def _await_ready(self) -> None:
        for worker in self.workers:
            with os.fdopen(worker.ready_fd, "rb") as pipe:
                message = pipe.read()
            worker.ready_fd = None
            report = json.loads(message.decode() or '{"error": "a worker process exited before listening"}')
            if "error" in report:
                raise CapfError(report["error"])

    def _supervise(self, watched, mask) -> int:
        code, sent = 0, signal.SIGTERM
        while True:
            info = signal.sigtimedwait(watched, 1.0)
            if info is not None and info.si_signo == signal.SIGHUP and not self.stopping:
                self.on_hangup()
                log.info("CAPF service reloading: SIGHUP to %d workers", len(self.workers))
                for worker in self.workers:
                    _signal(worker.pid, signal.SIGHUP)
            if info is not None and info.si_signo in (signal.SIGTERM, signal.SIGINT) and not self.stopping:
                self.stopping = True
                sent = info.si_signo
                log.info("CAPF service stopping: %s to %d workers", signal.Signals(info.si_signo).name,
                         len(self.workers))
                for worker in self.workers:
                    _signal(worker.pid, info.si_signo)
                deadline = time.monotonic() + STOP_GRACE_SECONDS
            for worker, pid, status in self._reap():
                died = os.waitstatus_to_exitcode(status)
                if self.stopping:
                    # A worker the signal reached before its event loop took it over (one just started
                    # again) ends by the signal's default action: stopped as asked, not failed.
                    code = code or (0 if died in (0, -sent) else 1)
                    continue
                log.warning("CAPF worker %d (pid %d) exited unexpectedly (%s); starting a new one", worker.index,
                            pid, f"exit code {died}" if died >= 0 else f"signal {-died}")
                self.quick_deaths = self.quick_deaths + 1 if time.monotonic() - worker.started < QUICK_DEATH_SECONDS \
                    else 0
                if self.quick_deaths >= MAX_QUICK_DEATHS:
                    log.error("CAPF service: workers keep dying within %.0f s of their start; stopping",
                              QUICK_DEATH_SECONDS)
                    self._stop_all()
                    return 1
                self._start(worker, mask, report=False)
            if self.stopping:
                if all(worker.pid == 0 for worker in self.workers):
                    return code
                if time.monotonic() > deadline:
                    log.warning("CAPF service: workers did not stop within %.0f s; killing them", STOP_GRACE_SECONDS)
                    self._stop_all(kill=True)
                    return 1

    def _reap(self):
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            metrics.process_ended(pid)
            for worker in self.workers:
                if worker.pid == pid:
                    worker.pid = 0
                    yield worker, pid, status

    def _stop_all(self, kill: bool = False) -> None:
        """SIGTERM (or SIGKILL) every live worker and wait for it; SIGKILL what outlives the grace."""
        for worker in self.workers:
            _signal(worker.pid, signal.SIGKILL if kill else signal.SIGTERM)
        deadline = time.monotonic() + (5 if kill else STOP_GRACE_SECONDS)
        while any(worker.pid for worker in self.workers):
            for worker in self.workers:
                if worker.pid:
                    try:
                        pid, _status = os.waitpid(worker.pid, os.WNOHANG)
                    except ChildProcessError:
                        pid = worker.pid
                    if pid:
                        worker.pid = 0
            if time.monotonic() > deadline:
                if kill:
                    return
                self._stop_all(kill=True)
                return
            time.sleep(0.05)


def _signal(pid: int, signum: int) -> None:
    if not pid:
        return
    try:
        os.kill(pid, signum)
    except OSError as exc:
        if exc.errno != errno.ESRCH:
            raise


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def _report(fd: int, message: dict) -> None:
    try:
        os.write(fd, json.dumps(message).encode())
        os.close(fd)
    except OSError:
        pass


__all__ = ["Supervisor", "automatic_processes", "listen_plan", "usable_cores"]
