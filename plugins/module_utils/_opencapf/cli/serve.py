# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""``serve``: run the CAPF protocol service (foreground, or ``--daemon``).

Foreground: logs to standard error, prints one ``listening on ADDRESS port PORT`` line per
socket once it accepts connections, stops gracefully on SIGTERM or SIGINT. ``--daemon``
double-forks, writes ``--pid-file``, logs to ``--log-file`` and returns only once the listener
accepts (or with the error that stopped it). ``--processes N`` (default: the ``processes`` service
parameter; 0, its default, is one per usable core up to a cap) greater than 1 runs N worker
processes behind the same port under a supervisor
(``server.supervisor``); the pid printed or written is the supervisor's, and SIGTERM to it stops
them all. SIGHUP reloads: the parameters and the CAPF certificate are read again and ``--log-file``
is reopened at its path (logrotate), in the supervisor and every worker; the service goes on.
The service also runs the scheduler (``server.scheduling``): due jobs, passed deadlines and automatic
renewal. ``--metrics-address`` (default: the ``metrics_address`` parameter) serves Prometheus
metrics of the whole service over HTTP (``server.metrics``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal

from ..errors import ValidationError
from ..server import event_loop, metrics
from ..server.service import ServerOptions, serve
from ..server.supervisor import Supervisor, automatic_processes, usable_cores
from ..store import open_store, postgresql
from ..store import service as service_records
from ..vocabulary import AUTOMATIC_PROCESSES_CAP, DEFAULT_MAX_SESSION_SECONDS, EVENT_LOOPS
from .options import address, bounded, host_port, limit_help


def register(subparsers) -> None:
    parser = subparsers.add_parser("serve", help="run the CAPF protocol service (TLS, port 3804)")
    parser.add_argument("--listen", action="append", metavar="ADDRESS", type=address,
                        help="address to listen on (repeatable); default: the listen_addresses parameter")
    parser.add_argument("--port", type=bounded("listen_port"), default=None,
                        help=f"TCP port ({limit_help('listen_port')}; 0: any free port); default: the port parameter")
    parser.add_argument("--step-timeout", type=bounded("step_timeout"), default=10.0,
                        help=f"seconds a phone may take per step ({limit_help('step_timeout')}, default 10)")
    parser.add_argument("--max-session-seconds", type=bounded("max_session_seconds"),
                        default=DEFAULT_MAX_SESSION_SECONDS,
                        help=f"seconds a phone session may last at most, however the phone paces its keep-alives "
                             f"({limit_help('max_session_seconds')}, default {DEFAULT_MAX_SESSION_SECONDS}); an "
                             "operation left in progress past it (its service died) is settled by the scheduler. "
                             "Keep it above keygen_timeout_minutes plus keepalive_minutes")
    parser.add_argument("--queue-timeout", type=bounded("queue_timeout"), default=60.0,
                        help=f"seconds a connection may wait for a free session slot ({limit_help('queue_timeout')}, "
                             "default 60)")
    parser.add_argument("--processes", type=bounded("processes"), default=None,
                        help="worker processes sharing the listening port (default: the processes parameter, 0 "
                             f"unless set); 0: one per usable core, at most {AUTOMATIC_PROCESSES_CAP} "
                             f"({automatic_processes()} here); any other value at most {max_processes()} on this "
                             "machine (four per core)")
    parser.add_argument("--cpu-affinity", action="store_true",
                        help="with several processes: keep worker i on the i-th usable CPU and give it the "
                             "connections that CPU receives (SO_INCOMING_CPU); for a network card whose receive "
                             "queues are spread over the CPUs (RSS). With a single queue every connection would "
                             "go to one worker: leave it off")
    parser.add_argument("--event-loop", choices=EVENT_LOOPS, default=None,
                        help="the event loop: auto (uvloop when installed, else asyncio), asyncio or uvloop; "
                             "default: the event_loop parameter (auto unless set)")
    parser.add_argument("--store-threads", "--workers", dest="store_threads", type=bounded("store_threads"), default=4,
                        help=f"threads for store work in each process ({limit_help('store_threads')}, default 4; "
                             "--workers is its old, deprecated name)")
    parser.add_argument("--handshake-timeout", type=bounded("handshake_timeout"), default=10.0,
                        help=f"seconds a client may take for its whole TLS handshake "
                             f"({limit_help('handshake_timeout')}, default 10)")
    parser.add_argument("--max-handshakes", type=bounded("max_handshakes"), default=1000,
                        help=f"TLS handshakes in progress at once ({limit_help('max_handshakes')}, default 1000); "
                             "further connections wait for one to end")
    parser.add_argument("--max-connections", type=bounded("max_connections"), default=1000,
                        help=f"connections not yet in a CAPF session at once, in each process "
                             f"({limit_help('max_connections')}, default 1000): waiting for or in their TLS handshake, "
                             "or waiting for a session slot; further connections are closed at once, before TLS")
    parser.add_argument("--enrolment-interval", type=bounded("enrolment_interval"), default=30.0,
                        help="seconds between the certificate enrolment service's polls of pending online CA "
                             f"requests (issuer online_ca; {limit_help('enrolment_interval')}, default 30; "
                             "0 turns it off)")
    parser.add_argument("--metrics-address", type=host_port, default=None, metavar="IP:PORT",
                        help="serve Prometheus metrics over plain HTTP at http://IP:PORT/metrics (an IPv6 address in "
                             "brackets; '' for none); default: the metrics_address parameter (none unless set)")
    parser.add_argument("--daemon", action="store_true", help="detach; return once the listener accepts")
    parser.add_argument("--pid-file", help="with --daemon: write the daemon's process id here")
    parser.add_argument("--log-file", help="with --daemon: append the log here (reopened on SIGHUP, for logrotate)")
    parser.set_defaults(handler=run)


def max_processes() -> int:
    return 4 * (os.cpu_count() or 1)


def _check(args) -> None:
    limit = max_processes()
    given = args.processes
    store = open_store(args.store, actor="capf-server", create=False)
    try:
        with store.read() as tx:
            stored = service_records.read(tx)
        args.state_dir_resolved = store.state_dir
    finally:
        store.close()
    if args.metrics_address is None:
        args.metrics_address = stored["metrics_address"]
    if given is None:
        args.processes = stored["processes"]
        if args.processes > limit:
            raise ValidationError("the processes service parameter", f"must be at most {limit} on this machine "
                                  "(four per core); lower it or pass --processes", args.processes)
    if not 0 <= args.processes <= limit:
        raise ValidationError("--processes", f"must be between 0 and {limit} (four per core; 0: one per usable "
                              "core)", args.processes)
    args.processes_automatic = args.processes == 0
    if args.processes_automatic:
        args.processes = automatic_processes()
    if args.cpu_affinity and hasattr(os, "sched_getaffinity") and args.processes > len(os.sched_getaffinity(0)):
        raise ValidationError("--cpu-affinity", f"needs at most one process per usable CPU "
                              f"({len(os.sched_getaffinity(0))} here); lower --processes", args.processes)
    if args.event_loop is None:
        args.loop = event_loop.resolve(stored["event_loop"], "the event_loop service parameter")
    else:
        args.loop = event_loop.resolve(args.event_loop, "--event-loop")


def _options(args) -> ServerOptions:
    return ServerOptions(addresses=tuple(args.listen) if args.listen else None, port=args.port,
                         step_timeout=args.step_timeout, queue_timeout=args.queue_timeout, workers=args.store_threads,
                         handshake_timeout=args.handshake_timeout, max_handshakes=args.max_handshakes,
                         max_connections=args.max_connections, enrolment_interval=args.enrolment_interval,
                         max_session_seconds=args.max_session_seconds, metrics_address=args.metrics_address)


def _open_store(args):
    return open_store(args.store, actor="capf-server", create=False, group_commit=True)


async def _main(args, ready, log_file) -> None:
    loop = asyncio.get_running_loop()
    stop, reload = asyncio.Event(), asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: (log_file.reopen(), reload.set()))
    store = _open_store(args)
    try:
        served = await serve(store, _options(args), ready=ready, stop_event=stop, reload_event=reload)
    finally:
        store.close()
    logging.getLogger("opencapf.server").info("CAPF service stopped after serving %d sessions", served)


def _serve(args, ready, private_fds=(), log_file=None) -> int:
    """One process, or a supervisor and ``--processes`` workers; return the exit code.
    ``private_fds`` are the supervisor's alone: workers close them."""
    log_file = log_file or _LogFile(None)
    if args.metrics_address:  # before any worker is forked: they all count into this directory
        metrics.enable(metrics.directory_for(args.state_dir_resolved, args.metrics_address))
    if getattr(args, "processes_automatic", False):
        logging.getLogger("opencapf.server").info(
            "CAPF service: processes 0: %d worker process(es), one per usable core (%d usable, at most %d)",
            args.processes, usable_cores(), AUTOMATIC_PROCESSES_CAP)
    if args.processes == 1:
        event_loop.run(_main(args, ready, log_file), args.loop)
        return 0
    code = Supervisor(lambda: _open_store(args), _options(args), args.processes, private_fds,
                      cpu_affinity=args.cpu_affinity, on_hangup=log_file.reopen, loop=args.loop).run(ready)
    logging.getLogger("opencapf.server").info("CAPF service stopped")
    return code


def _lean_log_records() -> None:
    """The service writes a log line per session, in a format of time, level, logger and message only
    (``main``, ``_detach``): its records need not carry the thread, the process, the asyncio task or the
    caller's source line, which logging otherwise looks up for every record (the Logging HOWTO's
    "Optimization")."""
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging.logAsyncioTasks = False  # Python 3.12 and later; ignored before
    logging._srcfile = None  # pylint: disable=protected-access


def _lines(bound) -> str:
    return "".join(f"listening on {host} port {port}\n" for host, port in bound)


def run(args, output) -> int:
    # Until the service handles SIGHUP (reload), a reload arriving during the start must not end it.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    _check(args)
    if not args.verbose:
        logging.getLogger("opencapf.server").setLevel(logging.INFO)
    _lean_log_records()
    if args.daemon:
        return _daemonise(args, output)

    def ready(bound):
        if output.as_json:
            output.result({"listening": [{"address": h, "port": p} for h, p in bound], "pid": os.getpid()})
        else:
            output.stream.write(_lines(bound))
        output.stream.flush()

    return _serve(args, ready)


def _daemonise(args, output) -> int:
    """Double fork; the parent returns once the grandchild reports that it listens (or failed)."""
    # The daemon changes its directory: relative file paths become absolute, a connection string stays.
    for name in ("store", "pid_file", "log_file"):
        if getattr(args, name) and not (name == "store" and postgresql.is_location(args.store)):
            setattr(args, name, os.path.abspath(getattr(args, name)))
    read_end, write_end = os.pipe()
    first = os.fork()
    if first:
        os.close(write_end)
        os.waitpid(first, 0)
        with os.fdopen(read_end, "rb") as pipe:
            message = pipe.read()
        report = json.loads(message.decode() or '{"error": "the daemon exited before listening"}')
        if "error" in report:
            output.error(report["error"])
            return 1
        output.result(report, _lines(report["listening"]) + f"daemon pid {report['pid']}")
        return 0
    os.close(read_end)
    os.setsid()
    if os.fork():
        os._exit(0)  # the intermediate child; the daemon is now re-parented to init
    code = 1
    try:
        log_file = _detach(args.log_file)
        if args.pid_file:
            # O_NOFOLLOW: a symbolic link planted at the pid file's path is refused, not written through.
            descriptor = os.open(args.pid_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
            with os.fdopen(descriptor, "w", encoding="ascii") as handle:
                handle.write(f"{os.getpid()}\n")

        def ready(bound):
            os.write(write_end, json.dumps({"listening": bound, "pid": os.getpid()}).encode())
            os.close(write_end)

        code = _serve(args, ready, (write_end,), log_file)
    except BaseException as exc:  # report why the daemon could not start, then leave
        try:
            os.write(write_end, json.dumps({"error": str(exc) or exc.__class__.__name__}).encode())
            os.close(write_end)
        except OSError:
            pass
        logging.getLogger("opencapf.server").error("CAPF service failed: %s", exc)
    finally:
        if args.pid_file and os.path.exists(args.pid_file):
            os.unlink(args.pid_file)
    os._exit(code)


class _LogFile:
    """The daemon's log file (standard output and error, and the log handler), reopened at its path
    on SIGHUP: once logrotate has moved the file away, the lines go to a new file of that name."""

    def __init__(self, path: str | None, handler: logging.StreamHandler | None = None):
        self.path = path
        self.handler = handler

    def open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o640)

    def reopen(self) -> None:
        if not self.path:
            return
        try:
            target = self.open()
        except OSError as exc:
            logging.getLogger("opencapf.server").error("cannot reopen the log file %s: %s; logging on to the old "
                                                       "file", self.path, exc.strerror)
            return
        try:
            self.handler.flush()
            for fd in (1, 2, self.handler.stream.fileno()):
                os.dup2(target, fd)
        finally:
            os.close(target)
        logging.getLogger("opencapf.server").info("log file %s reopened (pid %d)", self.path, os.getpid())


def _detach(path: str | None) -> _LogFile:
    os.chdir("/")
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    log_file = _LogFile(path)
    target = log_file.open() if path else null
    os.dup2(target, 1)
    os.dup2(target, 2)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(os.fdopen(os.dup(2), "w", buffering=1))
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    log_file.handler = handler
    return log_file
