# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The TLS driver of the CAPF service (TCP 3804), on asyncio's event loop or uvloop (``event_loop``).

One task per connection, no thread per connection: the sans-I/O ``ServerSession`` does the
protocol, and its store work runs right on the event loop (SQLite answers these small
transactions faster than a hand-off to a thread and back). Only waiting is handed to threads:
the disk to one sync thread (``Durability``: every session that must have its commits on disk
before it answers the phone awaits one fsync shared by all of them) and, while the issuer is
``online_ca``, whole sessions to a small thread pool, because they call the CA over HTTP. A store that
cannot be reached (a database down, its host silent) holds the loop up once at most (PostgreSQL's
``LOOP_ROUND_TRIP_SECONDS``): from then on the loop leaves it alone, serving connections with the state read
last and failing sessions' store work at once, while the thread pool tries to reach it (``_reachable``). For every connection the
driver re-reads the service parameters (so changes apply to the next session without a
restart), refuses IPv6 peers when ``enable_ipv6`` is false, refuses every connection while
``ServerOptions.max_connections`` connections are not yet in a session (``admission``: what such a
connection may cost), and refuses a peer address that already holds ``max_sessions_per_address``
connections. The driver accepts the connections itself and keeps each a plain socket that nothing
reads (``tls_link.Link``): it waits, holding no TLS state, for the client's first bytes, then for a
handshake slot (at most ``ServerOptions.max_handshakes`` TLS handshakes run at once), wraps the
socket in a non-blocking ``ssl.SSLSocket`` with the current CAPF certificate and drives the
handshake, the first bytes and the handshake within one deadline, and only then waits for a free
session slot (back-pressure). A client that is slow or silent before or during the handshake
therefore never holds a session slot, and one address cannot hold more than its share of the
service. The session reads and writes the ``SSLSocket`` directly, with readiness from the event
loop (``tls_link``); this costs less CPU per enrolment than the loop's TLS transport with a stream
reader and writer did, on both loops (docs/benchmarks.md, "TLS driver over SSLSocket").

The TLS context sends no TLS 1.3 session tickets (``num_tickets = 0``): phones never resume a
TLS session, and the two tickets OpenSSL sends after every handshake by default were made,
encrypted and sent for nothing (about 1.8 % of the server's instructions per enrolment, measured
with callgrind).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import errno
import ipaddress
import logging
import os
import queue
import secrets
import socket
import ssl
import threading
import warnings
import time
from dataclasses import dataclass

from .. import enrolment, faults, parameters as service_parameters
from ..ca import authority
from ..ca import certificates as ca_certificates
from ..errors import CapfError, StepUndone, StoreBusy, StoreError, StoreUnreachable
from ..files import write_private_file
from ..protocol.session import ServerSession
from ..sockets import bind_listeners, set_nodelay
from ..store import Store
from ..store import service as service_records
from ..store import sessions as session_records
from ..store.backend import writer_lock_wait_until
from ..vocabulary import DEFAULT_MAX_SESSION_SECONDS, check_limit, format_utc, utc_now
from . import event_loop, metrics, scheduling
from .crl_http import CrlResponder
from .admission import Reclaimer
from .decider import ACTOR, StoreDecider
from .tls_link import Link

log = logging.getLogger("opencapf.server")
ACCEPT_BATCH = 64  # connections accepted per wake-up of a listening socket at most
ACCEPT_RETRY_SECONDS = 1.0  # pause of a listening socket after the process ran out of descriptors or memory
# Issuers whose sessions may wait on the network (the online CA's HTTP): their steps run in the
# thread pool, never on the event loop.
NETWORK_ISSUERS = ("online_ca",)
# A step of a session that finds the store's write lock held by another process tries again after this
# long at most (starting at a millisecond), until its step timeout.
WRITER_CLAIM_POLL_SECONDS = 0.05
# A connection that ended before its session began (refused, its TLS failed) waits this long at most for
# the write lock to be recorded, then is logged instead.
END_RECORD_WAIT_SECONDS = 1.0
# Once the store cannot be reached (``StoreUnreachable``: a database down, a host that does not answer), the
# event loop leaves it alone (``Backend.unreachable``): connections are served with the state read last and
# sessions' store work fails at once, while the thread pool tries to reach it again, one attempt at a time
# and this long after the last one failed at the soonest; the store is used again once an attempt reaches it.
STORE_RETRY_SECONDS = 2.0
# A step that finds an attempt to reach the store under way awaits it this long at most (a database that
# restarted answers within milliseconds; a host that does not answer takes the connect timeout).
STORE_ATTEMPT_WAIT_SECONDS = 0.5


@dataclass(frozen=True)
class ServerOptions:
    addresses: tuple | None = None  # None: the listen_addresses service parameter
    port: int | None = None  # None: the port service parameter; 0: ephemeral
    step_timeout: float = 10.0  # per protocol step (phones answer within seconds)
    handshake_timeout: float = 10.0  # for the whole TLS handshake, however the client paces its bytes
    max_session_seconds: int = DEFAULT_MAX_SESSION_SECONDS  # a session's time bound, however the phone paces it
    max_handshakes: int = 1000  # TLS handshakes in progress at once; further connections wait (unread)
    max_connections: int = 1000  # connections not yet in a session at once; further ones are closed before TLS
    queue_timeout: float = 60.0  # how long a connection may wait for a free session slot
    workers: int = 4
    enrolment_interval: float = 30.0  # seconds between the enrolment service's polls (0: no enrolment service)
    sockets: tuple = ()  # listening sockets bound already (one server process of several); replaces addresses/port
    metrics_address: str = ""  # HOST:PORT of the metrics endpoint this process serves ("": none)
    crl_http: bool = True  # answer GET /capf.crl when crl_http_port is set (one process of several does)

    def __post_init__(self):  # the ranges of the serve options that set these (vocabulary.LIMITS)
        for name in ("step_timeout", "handshake_timeout", "max_handshakes", "max_connections", "queue_timeout",
                     "enrolment_interval"):
            check_limit(name, getattr(self, name))
        check_limit("max_session_seconds", self.max_session_seconds)
        check_limit("store_threads", self.workers, "workers")
        if self.port is not None:
            check_limit("listen_port", self.port, "port")


class SessionIds:
    """A randomly seeded 32-bit counter that never yields 0 (old signatures cannot be replayed)."""

    def __init__(self):
        self._next = secrets.randbelow(0xFFFFFFFF) + 1

    def __call__(self) -> int:
        value = self._next
        self._next = value % 0xFFFFFFFF + 1
        return value


class CapfServer:
    def __init__(self, store: Store, options: ServerOptions | None = None):
        self.store = store
        self.options = options or ServerOptions()
        self.session_ids = SessionIds()
        self.bound: list[tuple[str, int]] = []
        self.served = 0
        self._listeners: list[socket.socket] = []
        self._stopped: asyncio.Future | None = None  # serve_forever's end
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=self.options.workers,
                                                           thread_name_prefix="capf-store")
        self._in_pool: set[concurrent.futures.Future] = set()  # the work handed to the pool, until its thread ends it
        self._contexts: dict[tuple, ssl.SSLContext] = {}
        self._sessions = _Slots()
        self._handshakes = _Slots()
        self.per_address: dict[str, int] = {}  # open connections per peer address (every stage)
        self.before_session = 0  # connections not yet in a session (max_connections)
        self._reclaimer = Reclaimer()
        self._quiet_log = _QuietLog()
        self._tasks: set[asyncio.Task] = set()
        self._durability = Durability(store)
        self._state: tuple | None = None  # (store data version, (parameters, signer)) of the last read
        self._unreachable_since: float | None = None  # (time.monotonic) while the store cannot be reached
        self._attempt: asyncio.Future | None = None  # the attempt under way to reach the store again
        self._attempt_after = 0.0  # (time.monotonic) no attempt begins before
        self._started_with: dict = {}  # the parameters that apply only at a start, as they were then

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> list[tuple[str, int]]:
        """Bind every configured address; return the (address, port) pairs listened on."""
        if self.store.backend.group_commit:
            self.store.defer_durability()  # this thread: the event loop's
        parameters, _signer = self._connection_state()  # fails now, not at the first phone, without a CAPF certificate
        self._started_with = {name: parameters[name] for name in service_parameters.RESTART_PARAMETERS}
        addresses = [] if self.options.sockets else list(self.options.addresses or parameters["listen_addresses"])
        port = parameters["port"] if self.options.port is None else self.options.port
        listeners = list(self.options.sockets)
        wanted = []
        for address in addresses:
            if ipaddress.ip_address(address).version == 6 and not parameters["enable_ipv6"]:
                log.warning("not listening on %s: the enable_ipv6 service parameter is false", address)
                continue
            wanted.append(address)
        if wanted:
            listeners.extend(bind_listeners(wanted, port, 1)[0])  # one port for every address, also for 0
        if not listeners:
            raise CapfError("listen_addresses leaves nothing to listen on (IPv6 addresses need enable_ipv6)")
        loop = asyncio.get_running_loop()
        self._stopped = loop.create_future()
        for sock in listeners:
            sock.setblocking(False)
            self._listeners.append(sock)
            self.bound.append(tuple(sock.getsockname()[:2]))
            loop.add_reader(sock.fileno(), self._acceptable, sock)
        for host, bound_port in self.bound:
            log.info("CAPF service listening on %s port %d", host, bound_port)
        return self.bound

    async def serve_forever(self) -> None:
        await asyncio.shield(self._stopped)

    async def enrolment_service(self, stop_event: asyncio.Event) -> None:
        """The certificate enrolment service, coupled to CAPF as in the source: it runs inside the
        CAPF process (so restarting CAPF restarts it) and, while the issuer is online_ca, picks up
        requests the online CA held pending and records the certificates it has signed since."""
        interval = self.options.enrolment_interval
        if interval <= 0:
            return
        parameters, _signer = self._connection_state()
        if parameters["issuer"] == "online_ca":
            log.info("certificate enrolment service started (polls pending online CA requests every %.0f s)",
                     interval)
        while not stop_event.is_set():
            try:
                await asyncio.wait_for(stop_event.wait(), interval)
            except asyncio.TimeoutError:
                pass
            if stop_event.is_set():
                break
            try:
                counts = await self._run(enrolment.worker_step, self.store, ACTOR)
            except CapfError as exc:  # the CA or the store may be away for a while: keep serving phones
                log.warning("certificate enrolment service: %s", exc)
                continue
            if counts.get("issued") or counts.get("failed"):
                log.info("certificate enrolment service: %s", counts)

    async def stop(self, grace: float = 10.0, store_deadline: float | None = None) -> None:
        """Stop accepting, let running sessions finish for up to ``grace`` seconds, then end them; then await the
        store work left in the thread pool until ``store_deadline`` (the event loop's time; ``serve``'s: the one
        deadline of all its stop's store work, ``scheduling.STOP_STORE_WAIT_SECONDS`` after the stop began; by
        default as long after this call), and end what is left of it (``_pool_done``)."""
        if store_deadline is None:
            store_deadline = asyncio.get_running_loop().time() + scheduling.STOP_STORE_WAIT_SECONDS
        self._close_listeners()
        if self._tasks:
            _done, pending = await asyncio.wait(list(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)
        await self._durability.wait(self.store.durable_mark)
        self._durability.close()
        self.store.defer_durability(False)
        await self._pool_done(store_deadline)
        self._pool.shutdown(wait=True)
        self._reclaimer.close()

    def reload(self) -> None:
        """Read the service parameters and the CAPF certificate again now (SIGHUP), whatever the store
        reports about changes, and load the TLS certificate and key files afresh at the next connection.
        Parameters that apply only at a start are logged when they changed, with the restart they need."""
        if self._state is not None:  # read again; kept to serve with while the store cannot be reached
            self._state = (None, self._state[1])
        self._contexts = {}
        parameters, signer = self._connection_state()
        if not self._reachable():
            raise StoreUnreachable(str(self.store.backend.unreachable))
        log.info("CAPF service (pid %d) reloaded: service parameters and CAPF certificate %s read again",
                 os.getpid(), signer.common_name)
        for name, before in self._started_with.items():
            if parameters[name] != before:
                log.warning("CAPF service (pid %d): %s changed from %s to %s; it takes effect when the service "
                            "restarts", os.getpid(), name, before, parameters[name])

    def _close_listeners(self) -> None:
        loop = asyncio.get_running_loop()
        for sock in self._listeners:
            if sock.fileno() >= 0:
                loop.remove_reader(sock.fileno())
                sock.close()
        if self._stopped is not None and not self._stopped.done():
            self._stopped.set_result(None)

    def _acceptable(self, listener: socket.socket) -> None:
        """Accept what waits on ``listener`` (up to ``ACCEPT_BATCH`` per wake-up): each connection gets
        its task, and the socket stays plain, unread, until the driver upgrades it to TLS."""
        loop = asyncio.get_running_loop()
        for _each in range(ACCEPT_BATCH):
            try:
                sock, _peer_address = listener.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:
                if exc.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    return
                # Out of descriptors or memory: the connection stays in the backlog; try again shortly.
                self._quiet_log.warning(("accept",), "cannot accept connections for now: %s", exc.strerror or exc)
                loop.remove_reader(listener.fileno())
                loop.call_later(ACCEPT_RETRY_SECONDS, self._accept_again, listener)
                return
            sock.setblocking(False)
            set_nodelay(sock)
            loop.create_task(self._accept(sock))

    def _accept_again(self, listener: socket.socket) -> None:
        if listener.fileno() >= 0:
            asyncio.get_running_loop().add_reader(listener.fileno(), self._acceptable, listener)

    # -- helpers ------------------------------------------------------------------------------

    async def _run(self, function, *args):
        return await self._submit(function, *args)

    def _submit(self, function, *args) -> asyncio.Future:
        """``function(*args)`` in the thread pool; its future (of the event loop). The work is in ``_in_pool`` until
        its thread is done with it, also when the future was cancelled (a session's task that ended)."""
        work = self._pool.submit(function, *args)
        self._in_pool.add(work)
        work.add_done_callback(self._in_pool.discard)
        return asyncio.wrap_future(work)

    async def _pool_done(self, deadline: float) -> None:
        """Await the work in the thread pool until ``deadline`` (the event loop's time) at most, not at all once it
        has passed; then end its store work (``Backend.abort``: its host may not be answering), which then fails
        at once."""
        pending = [asyncio.wrap_future(work) for work in list(self._in_pool)]
        if not pending:
            return
        for waited in pending:  # their outcome is their callers' (a session's, the enrolment service's), told there
            waited.add_done_callback(lambda done: done.cancelled() or done.exception())
        left = deadline - asyncio.get_running_loop().time()
        if left > 0:
            await asyncio.wait(pending, timeout=left)
        waiting = [waited for waited in pending if not waited.done()]
        if waiting:
            log.warning("%d piece(s) of store work did not end within %d s of the stop (the store's host may not be "
                        "answering): their store work is ended, and rolled back", len(waiting),
                        scheduling.STOP_STORE_WAIT_SECONDS)
            self.store.backend.abort()

    async def _step(self, inline: bool, function, *args, lock_wait: float | None = None, timed: bool = False):
        """One piece of store work: on the event loop (then waiting for the disk, off the loop, when
        it made a durable commit), or in the thread pool when it may wait on the network. On the loop,
        while another process holds the store's write lock (a long 'opencapf apply'), the step awaits it
        first, the loop serving everything else meanwhile, up to the step timeout: then ``StoreBusy``,
        the step not run (``lock_wait``: that many seconds instead). A step of a session that meets the lock
        all the same before it has written anything (another writer took it after that look; on the loop its
        write waits ``LOOP_WRITER_LOCK_WAIT_SECONDS`` for it at most) is undone by the session
        (``StepUndone``; a session record of the service's own, ``_record``, alike) and awaits the lock in the
        same way, then runs again, within the same bound. A step in the thread pool (an online CA's) waits for
        the lock there, as long as the same bound at most (``writer_lock_wait_until``), then is undone and ends
        the same way. While the store cannot be reached (``_reachable``),
        the step's store work fails at once with ``StoreUnreachable``, after awaiting an attempt to reach it
        under way (``STORE_ATTEMPT_WAIT_SECONDS`` at most); a step in the thread pool is not run then (it
        would wait out a connect timeout there).
        ``timed``: ``function`` takes the moment it runs as its last argument (taken anew for a run again)."""
        if self._attempt is not None:  # the store cannot be reached: a database that restarted is reached at once
            await asyncio.wait([self._attempt], timeout=STORE_ATTEMPT_WAIT_SECONDS)
        loop = asyncio.get_running_loop()
        bound = self.options.step_timeout if lock_wait is None else lock_wait
        ends = loop.time() + bound
        while True:
            try:
                if not inline:
                    if self.store.backend.unreachable is not None:
                        raise StoreUnreachable(str(self.store.backend.unreachable))
                    until = time.monotonic() + (ends - loop.time())  # the step's bound, on the thread's clock
                    return await self._run(_waiting_until, until, function, *args, *((loop.time(),) if timed else ()))
                if not self.store.backend.writer_lock_free():
                    await self._writer_lock_freed(ends, bound)
                mark = self.store.durable_mark
                result = function(*args, *((loop.time(),) if timed else ()))
            except StepUndone:
                if loop.time() >= ends:
                    raise _held_too_long(bound) from None
                await self._writer_lock_freed(ends, bound)
                continue
            except StoreUnreachable:
                self._reachable()  # its store work fails at once from now on, and an attempt to reach it begins
                raise
            if self.store.durable_mark != mark:
                await self._durability.wait(self.store.durable_mark)
            return result

    def _reachable(self) -> bool:
        """Whether the event loop may use the store (``Backend.unreachable``). While it may not, its store work
        fails at once, and an attempt to reach the store runs in the thread pool (``STORE_RETRY_SECONDS``): the
        event loop never waits for a connection to be made. The log tells when this begins and ends."""
        away = self.store.backend.unreachable
        now = time.monotonic()
        if away is None:
            if self._unreachable_since is not None:
                log.warning("the store can be reached again after %.1f s: sessions use it again",
                            now - self._unreachable_since)
                self._unreachable_since = None
            return True
        if self._unreachable_since is None:
            self._unreachable_since = now
            log.warning("the store cannot be reached (%s): connections are served with the service parameters and "
                        "CAPF certificate read before, sessions fail, and it is tried again every %g s", away,
                        STORE_RETRY_SECONDS)
        if self._attempt is None and now >= self._attempt_after:
            self._attempt = self._submit(self.store.data_version)
            self._attempt.add_done_callback(self._attempted)
        return False

    def _attempted(self, attempt: asyncio.Future) -> None:
        self._attempt = None
        if attempt.cancelled():
            return
        exc = attempt.exception()
        if exc is None:
            self._reachable()  # logs the end
            return
        self._attempt_after = time.monotonic() + STORE_RETRY_SECONDS
        if not isinstance(exc, StoreError):  # a defect of ours: the store stays left alone, the log tells
            log.error("the store cannot be reached: internal error: %s", _describe(exc))

    async def _writer_lock_freed(self, ends: float, bound: float) -> None:
        """Return once the store's write lock is free (``writer_lock_free``), at the loop's time ``ends`` at
        the latest (``StoreBusy``: ``bound``, the seconds the step may wait in all)."""
        loop = asyncio.get_running_loop()
        pause = 0.001
        while True:
            await asyncio.sleep(min(pause, max(0.0, ends - loop.time())))
            if self.store.backend.writer_lock_free():
                return
            if loop.time() >= ends:
                raise _held_too_long(bound)
            pause = min(2 * pause, WRITER_CLAIM_POLL_SECONDS)

    def _connection_state(self) -> tuple[dict, authority.Signer]:
        """The service parameters and the active CAPF certificate, read again only when another
        connection (a module, the CLI, another server process) has committed since the last read:
        the service itself changes neither. While the store cannot be reached (a database down, its
        host silent), those read before, without touching the store (StoreError when there are none)."""
        if self._reachable():
            try:
                version = self.store.data_version()
                if self._state is None or self._state[0] != version:
                    with self.store.read() as tx:
                        self._state = (version, (service_records.read(tx), authority.signer(self.store, tx)))
                return self._state[1]
            except StoreUnreachable:
                self._reachable()  # the store is left alone from now on (logged), and tried in the thread pool
            except StoreError as exc:
                if self._state is None:
                    raise
                self._quiet_log.warning(("store away",), "the store cannot be read (%s): connections are served with "
                                        "the service parameters and CAPF certificate read before", exc)
                return self._state[1]
        if self._state is None:
            raise StoreUnreachable(str(self.store.backend.unreachable))
        return self._state[1]

    def _tls_context(self, signer: authority.Signer, legacy: bool) -> ssl.SSLContext:
        key = (signer.id, legacy)
        context = self._contexts.get(key)
        if context is None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            if legacy:
                with warnings.catch_warnings():  # TLS 1.0 is deprecated; this profile exists for old phones
                    warnings.simplefilter("ignore", DeprecationWarning)
                    context.minimum_version = ssl.TLSVersion.TLSv1
                context.set_ciphers("DEFAULT:@SECLEVEL=0")
                log.warning("legacy TLS profile in use: TLS 1.0 and weak ciphers are accepted (legacy_tls)")
            else:
                context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.verify_mode = ssl.CERT_NONE  # phones prove themselves inside the protocol
            context.num_tickets = 0  # no TLS 1.3 session tickets: phones never resume a session (module docstring)
            # The certificate is public; the key comes from its 0600 cache file of the key sealed in the store.
            # The file is named by the certificate's fingerprint, not its row id: a state directory outlives a
            # store created again beside it (or a database rebuilt), whose certificate takes the same id.
            certificate_file = os.path.join(self.store.keys_dir,
                                            f"capf-tls-{ca_certificates.fingerprint(signer.certificate)[:16]}.crt")
            if not os.path.exists(certificate_file):
                write_private_file(certificate_file, signer.certificate.public_bytes(_pem_encoding()))
            context.load_cert_chain(certificate_file, authority.key_file(self.store, signer))
            self._contexts = {key: context}
        return context

    async def _end(self, record: dict, duration, outcome: str, reason: str) -> None:
        """Record a connection that ended before its CAPF session began (refused, or its TLS failed). While
        another process holds the store's write lock, the record waits for it ``END_RECORD_WAIT_SECONDS`` at
        most (another server process's transactions are short; the connection is not kept open for a long
        'opencapf apply'), then the connection is logged instead."""
        try:
            await self._step(True, lambda: self._record(**record, outcome=outcome, reason=reason, duration_ms=duration()),
                             lock_wait=END_RECORD_WAIT_SECONDS)
            return
        except StoreBusy:
            why = "another writer (such as a long 'opencapf apply') holds the store's write lock"
        except StoreError as exc:  # the store cannot be reached (a database down): the service serves on
            why = str(exc)
        self._quiet_log.warning(("store busy",), "session %d: %s: %s (%s) not recorded: %s", record["session_id"],
                                record["peer"], outcome, reason, why)

    async def _tls_failed(self, record: dict, duration, address: str, exc: BaseException) -> None:
        reason = f"TLS handshake failed: {_describe(exc)}"
        self._quiet_log.warning(("tls", address), "session %d: %s: %s", record["session_id"], record["peer"], reason)
        await self._end(record, duration, "tls_failed", reason)

    def _record(self, **fields) -> None:
        """The session record, in one write transaction: one the write lock kept from beginning wrote
        nothing, and is ``StepUndone`` (``_step`` awaits the lock and records it then)."""
        try:
            with self.store.transaction() as tx:
                session_records.record(tx, ACTOR, **fields)
        except StoreBusy as exc:
            raise StepUndone(str(exc)) from None
        metrics.session_recorded(fields["outcome"], fields["operation"], fields["duration_ms"])

    def session_decider(self, record: dict, duration, parameters: dict, signer) -> StoreDecider:
        """The decider of one session, which writes the session record in the session's last
        transaction (with the installation or the operation's result), durable before END_SESSION."""
        def recorder(tx, outcome) -> dict:
            fields = _session_fields(record, outcome, duration())
            session_records.record(tx, ACTOR, **fields)
            return fields

        return StoreDecider(self.store, record["peer"], record["session_id"], parameters, signer,
                            max_session=self.options.max_session_seconds, recorder=recorder)

    def _record_session(self, record: dict, session: ServerSession, duration) -> None:
        """The session record, unless the session's decider committed it with the session's end (a
        session that ended before the device was known has no decider work: recorded here)."""
        fields = session.decider.recorded
        if fields is not None:
            metrics.session_recorded(fields["outcome"], fields["operation"], fields["duration_ms"])
            return
        self._record(**_session_fields(record, session.outcome, duration()))

    # -- one connection -----------------------------------------------------------------------

    async def _accept(self, sock: socket.socket) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        link = Link(sock)
        try:
            await self._connection(link)
        except asyncio.CancelledError:
            raise
        except Exception:  # a defect of ours, never client input: log it with its traceback
            log.exception("internal error while serving %s", _peer(link.peername))
        finally:
            self._tasks.discard(task)
            await link.close()
            self._reclaimer.ended()

    async def _connection(self, link: Link) -> None:
        peer = _peer(link.peername)
        started = time.monotonic()
        started_at = format_utc(utc_now())
        session_id = self.session_ids()
        try:
            parameters, signer = self._connection_state()
        except StoreError as exc:  # never read, and the store cannot be reached: nothing to serve with
            self._quiet_log.warning(("store away",), "session %d: %s: closed: %s", session_id, peer, exc)
            return
        record = dict(session_id=session_id, device_name="", peer=peer, operation="", started_at=started_at)

        def duration() -> int:
            return int((time.monotonic() - started) * 1000)

        address, ipv6 = _address(link.peername)
        if ipv6 and not parameters["enable_ipv6"]:
            log.warning("session %d: refused IPv6 peer %s: the enable_ipv6 service parameter is false",
                        session_id, peer)
            await self._end(record, duration, "refused", "IPv6 is disabled")
            return
        if self.before_session >= self.options.max_connections:
            reason = f"connection limit reached (max_connections {self.options.max_connections})"
            self._quiet_log.warning(("connections",), "session %d: refused %s: %s", session_id, peer, reason)
            await self._end(record, duration, "refused", reason)
            return
        per_address = int(parameters["max_sessions_per_address"])
        if self.per_address.get(address, 0) >= per_address:
            reason = f"per-address connection limit reached (max_sessions_per_address {per_address})"
            self._quiet_log.warning(("limit", address), "session %d: refused %s: %s", session_id, peer, reason)
            await self._end(record, duration, "refused", reason)
            return
        self.per_address[address] = self.per_address.get(address, 0) + 1
        self.before_session += 1
        admitted = [True]

        def in_session() -> None:  # once: the connection holds a session slot, or ends before
            if admitted[0]:
                admitted[0] = False
                self.before_session -= 1

        try:
            await self._session(link, (parameters, signer), record, duration, address, in_session)
        finally:
            in_session()
            remaining = self.per_address[address] - 1
            if remaining:
                self.per_address[address] = remaining
            else:
                del self.per_address[address]

    async def _session(self, link: Link, state, record, duration, address, in_session) -> None:
        parameters, signer = state
        session_id, peer = record["session_id"], record["peer"]
        _set_keepalive(link.sock, int(parameters["keepalive_minutes"]) * 60)
        # One deadline for the whole handshake, from the connection's first moment to its Finished,
        # less only the wait for a handshake slot: a client trickling its bytes gains nothing.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.handshake_timeout
        if not await link.first_bytes(deadline):  # no TLS state while the client is silent
            await self._tls_failed(record, duration, address, asyncio.TimeoutError())
            return
        waited = loop.time()
        if not await self._handshakes.acquire(self.options.max_handshakes, self.options.queue_timeout):
            log.warning("session %d: %s waited %.0f s for a TLS handshake slot; closing", session_id, peer,
                        self.options.queue_timeout)
            await self._end(record, duration, "refused", "handshake limit reached")
            return
        deadline += loop.time() - waited
        try:
            context = self._tls_context(signer, bool(parameters["legacy_tls"]))
            await link.start_tls(context, deadline)
        except (ssl.SSLError, OSError, ConnectionError) as exc:
            await self._tls_failed(record, duration, address, exc)
            return
        finally:
            self._handshakes.release()
        if not await self._sessions.acquire(int(parameters["max_sessions"]), self.options.queue_timeout):
            log.warning("session %d: %s waited %.0f s for a free session slot; closing", session_id, peer,
                        self.options.queue_timeout)
            await self._end(record, duration, "refused", "session limit reached")
            return
        in_session()
        metrics.session_slot(1)
        try:
            inline = parameters["issuer"] not in NETWORK_ISSUERS
            bound = self.options.max_session_seconds
            session = ServerSession(session_id, self.session_decider(record, duration, parameters, signer),
                                    step_timeout=self.options.step_timeout, max_duration=bound)
            try:
                final = await self._converse(session, link, inline)
            except BaseException as exc:
                # The service stops (the task is cancelled) or a defect of ours: the session ends
                # here all the same, settles the phone's operation and is on record.
                if not session.closed:
                    session.connection_lost("the CAPF service stopped during the session"
                                            if isinstance(exc, asyncio.CancelledError) else "internal error")
                    self._record_session(record, session, duration)
                raise
            outcome = session.outcome
            unrecorded = "; the session is not recorded" if session.abandoned else ""
            if session.decider.recorded is not None:  # with the session's end: nothing to write
                self._record_session(record, session, duration)
            elif not session.abandoned:
                try:
                    await self._step(True, self._record_session, record, session, duration)
                except StoreError as exc:  # the store cannot be written (reached) now: the log tells it, once
                    unrecorded = "; the session is not recorded" + ("" if str(exc) in (outcome.reason or "")
                                                                    else f": {exc}")
            level = logging.INFO if outcome.outcome in ("succeeded", "no_operation", "deferred") else logging.WARNING
            log.log(level, "session %d: %s device %s operation %s: %s%s%s", session_id, peer,
                    outcome.device_name or "-", outcome.operation or "-", outcome.outcome,
                    f" ({outcome.reason})" if outcome.reason else "", unrecorded)
            self.served += 1
            faults.checkpoint("session.recorded")
            if final:
                try:
                    await link.write(final, loop.time() + self.options.step_timeout)
                except (ssl.SSLError, OSError, ConnectionError) as exc:
                    log.info("session %d: %s: END_SESSION not delivered: %s", session_id, peer, _describe(exc))
        finally:
            self._sessions.release()
            metrics.session_slot(-1)

    async def _converse(self, session: ServerSession, link: Link, inline: bool) -> bytes:
        """Run the conversation; return the final END_SESSION unsent, so that the session is on
        record before the phone learns how it ended. Nothing is sent before the durable commits
        of the step that produced it are on disk (``_step``). Every read and write waits at most
        until the session's deadline (its step timeout, or its time bound if that comes first)."""
        loop = asyncio.get_running_loop()
        try:
            await link.write(session.start(loop.time()), session.deadline)
            while not session.closed:
                data = await link.read(session.deadline)
                if data is None:
                    reply = await self._step(inline, session.time_passed, timed=True)
                elif not data:
                    await self._step(inline, session.connection_lost, "peer closed the connection")
                    break
                else:
                    reply = await self._step(inline, session.receive_data, data, timed=True)
                if session.closed:
                    return reply
                if reply:
                    await link.write(reply, session.deadline)
        except (ssl.SSLError, OSError, ConnectionError) as exc:
            try:
                await self._step(inline, session.connection_lost, f"connection failed: {_describe(exc)}")
            except StoreError as unwritten:
                session.abandon(str(unwritten))
        except StoreError as exc:
            # The store cannot be written for now (another writer holds it, or it cannot be reached: a
            # database down): the phone hears that the session failed, and learns nothing the store does
            # not hold (its operation stays as the session found it or left it at its last write: one no
            # session serves is settled by the scheduler after its time bound).
            return session.abandon(str(exc))
        return b""

    @property
    def active(self) -> int:
        """Sessions holding a session slot."""
        return self._sessions.used

    @property
    def handshaking(self) -> int:
        """Connections in their TLS handshake."""
        return self._handshakes.used


def _waiting_until(until: float, function, *args):
    """``function(*args)`` in a store thread, its writes waiting for the store's write lock until ``until``
    (``time.monotonic``) at most."""
    with writer_lock_wait_until(until):
        return function(*args)


def _held_too_long(bound: float) -> StoreBusy:
    return StoreBusy(f"another writer (such as a long 'opencapf apply') held the store's write lock for longer than "
                     f"the step may wait ({bound:g} s); nothing of the step was written")


def _session_fields(record: dict, outcome, duration_ms: int) -> dict:
    """The session record's fields: the connection's (``record``) and how the session ended."""
    details = dict(outcome.details)
    if outcome.version is not None:
        details["version"] = outcome.version
    return {**record, "device_name": outcome.device_name, "operation": outcome.operation, **details,
            "outcome": outcome.outcome, "reason": outcome.reason, "duration_ms": duration_ms}


class _Flight(asyncio.Future):
    """One fsync under way, awaited by every session it covers. A waiter that is cancelled does not
    cancel it (the others still need its end): the waiter's cancellation takes effect once it ends."""

    def cancel(self, msg=None) -> bool:  # pylint: disable=unused-argument
        return False


class Durability:
    """Waiting for the disk on behalf of the event loop. A session whose step made durable commits
    awaits ``wait(mark)`` before it answers; one fsync runs at a time, in a thread of its own, and
    serves every commit appended before it started, so concurrent sessions share it: one future per
    fsync, completed by one call into the loop, whatever the number of sessions waiting on it."""

    def __init__(self, store: Store):
        self._store = store
        self._synced = 0  # durable commits of the event loop known to be on disk
        self._flight: _Flight | None = None  # the fsync under way
        self._requests: queue.SimpleQueue = queue.SimpleQueue()  # (mark, flight, loop) to sync; None: stop
        self._thread: threading.Thread | None = None

    async def wait(self, mark: int) -> None:
        while self._synced < mark:
            flight = self._flight
            if flight is None:
                loop = asyncio.get_running_loop()
                # Everything up to the current mark is appended already: this fsync covers it.
                flight = self._flight = _Flight(loop=loop)
                if self._thread is None:
                    self._thread = threading.Thread(target=self._syncing, name="capf-sync", daemon=True)
                    self._thread.start()
                self._requests.put((self._store.durable_mark, flight, loop))
            await flight

    def _syncing(self) -> None:
        while (request := self._requests.get()) is not None:
            covered, flight, loop = request
            error = None
            try:
                self._store.sync(covered)
            except BaseException as exc:  # pylint: disable=broad-exception-caught
                error = exc  # every session waiting on this fsync learns it
            try:
                loop.call_soon_threadsafe(self._landed, flight, covered, error)
            except RuntimeError:  # the loop is closed: nobody waits any more
                return

    def _landed(self, flight: _Flight, covered: int, error: BaseException | None) -> None:
        self._flight = None
        if error is None:
            self._synced = max(self._synced, covered)
            flight.set_result(None)
        else:
            flight.set_exception(error)

    def close(self) -> None:
        """End the sync thread (after the last ``wait``)."""
        if self._thread is not None:
            self._requests.put(None)
            self._thread.join()
            self._thread = None


class _Slots:
    """A counting gate; the limit is given at each acquire (``max_sessions`` may change between
    sessions). A free slot is taken at once; waiters are served in arrival order."""

    def __init__(self):
        self.used = 0
        self._waiters: collections.deque = collections.deque()  # [limit, future] in arrival order

    async def acquire(self, limit: int, timeout: float) -> bool:
        """Take a slot, waiting up to ``timeout`` seconds for one; False when none came free."""
        if self.used < limit and not self._waiters:
            self.used += 1
            return True
        granted = asyncio.get_running_loop().create_future()
        entry = [limit, granted]
        self._waiters.append(entry)
        try:
            async with asyncio.timeout(timeout):
                await granted
        except TimeoutError:
            return granted.done() and not granted.cancelled()  # granted as the time ran out: it is ours
        except BaseException:
            if granted.done() and not granted.cancelled():
                self.release()
            raise
        finally:
            if entry in self._waiters:
                self._waiters.remove(entry)
        return True

    def release(self) -> None:
        self.used -= 1
        while self._waiters and self.used < self._waiters[0][0]:
            _limit, granted = self._waiters.popleft()
            if not granted.done():
                self.used += 1
                granted.set_result(None)


class _QuietLog:
    """Warnings about one address at most once a minute, so that a flood of bad connections from it
    cannot flood the log; the next line after a quiet minute says how many were left out."""

    INTERVAL = 60.0
    KEEP = 4096  # addresses remembered at most (older ones are forgotten first)

    def __init__(self):
        self._seen: dict = {}  # key -> [time last logged, connections left out since]

    def warning(self, key, message: str, *args) -> None:
        now = time.monotonic()
        entry = self._seen.get(key)
        if entry is not None and now - entry[0] < self.INTERVAL:
            entry[1] += 1
            return
        left_out = entry[1] if entry is not None else 0
        if left_out:
            message += " (%d more from this address in the last minute were not logged)"
            args += (left_out,)
        log.warning(message, *args)
        self._seen.pop(key, None)
        self._seen[key] = [now, 0]
        if len(self._seen) > self.KEEP:
            for old in list(self._seen)[:len(self._seen) - self.KEEP]:
                del self._seen[old]


def _pem_encoding():
    from ..dependencies import serialization
    return serialization.Encoding.PEM


def _peer(info) -> str:
    """``host:port`` of a peer address (``socket.getpeername()``), ``[host]:port`` for IPv6."""
    if not info:
        return "unknown"
    host, port = info[0], info[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _address(info) -> tuple[str, bool]:
    """The peer's IP address (an IPv4-mapped IPv6 address as IPv4), the key of the per-address limit,
    and whether it is an IPv6 address (a mapped IPv4 address is not)."""
    if not info:
        return "unknown", False
    try:
        address = ipaddress.ip_address(info[0].split("%", maxsplit=1)[0])
    except ValueError:
        return str(info[0]), False
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return str(address), address.version == 6


def _set_keepalive(sock, idle_seconds: int) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if hasattr(socket, "TCP_KEEPIDLE"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle_seconds)
    except OSError:
        pass


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    return getattr(exc, "reason", None) or exc.__class__.__name__ + (f": {exc}" if str(exc) else "")


async def serve(store: Store, options: ServerOptions | None = None, ready=None, stop_event=None,
                reload_event=None) -> int:
    """Run the service until ``stop_event`` (an asyncio.Event) is set; call ``ready(bound)`` once listening.
    Each time ``reload_event`` is set (SIGHUP), read the parameters and the CAPF certificate again.
    The scheduler runs beside the sessions (``scheduling``). Return how many sessions it served."""
    server = CapfServer(store, options)
    bound = await server.start()
    log.info("CAPF service (pid %d) runs on the %s event loop", os.getpid(), event_loop.running())
    endpoint = None
    if server.options.metrics_address:
        try:
            endpoint = metrics.Endpoint(server.options.metrics_address, store.location, store.state_dir)
        except BaseException:
            await server.stop()
            raise
    responder = await _start_crl_responder(server)
    if ready is not None:
        ready(bound)
    stop_event = stop_event or asyncio.Event()
    forever = asyncio.ensure_future(server.serve_forever())
    worker_stop = asyncio.Event()
    worker = asyncio.ensure_future(server.enrolment_service(worker_stop))
    jobs = asyncio.ensure_future(scheduling.run(store, worker_stop))
    reloads = asyncio.ensure_future(_reloads(server, reload_event)) if reload_event is not None else None
    try:
        await stop_event.wait()
    finally:
        # One deadline for all the stop's store work: the scheduler's tick (ended then by ``scheduling.run``, whose
        # wait begins with this one at ``worker_stop``), the enrolment service's pass and the thread pool's work.
        loop = asyncio.get_running_loop()
        store_deadline = loop.time() + scheduling.STOP_STORE_WAIT_SECONDS
        worker_stop.set()
        forever.cancel()
        if reloads is not None:
            reloads.cancel()
        try:  # its pass under way in the thread pool, cut short, is awaited with the pool's other work (CapfServer.stop)
            await asyncio.wait_for(worker, max(0.0, store_deadline - loop.time()))
        except (asyncio.TimeoutError, CapfError):
            pass
        try:
            await jobs  # a tick under way finishes by the deadline (then its store work ends)
        except Exception:  # pylint: disable=broad-except  # a defect of ours must not keep the sessions from ending
            log.exception("scheduler: internal error while stopping")
        if responder is not None:
            await responder.stop()
        await server.stop(store_deadline=store_deadline)
        if endpoint is not None:
            endpoint.close()
    return server.served


async def _start_crl_responder(server: CapfServer) -> CrlResponder | None:
    """The HTTP CRL responder on ``crl_http_address``/``crl_http_port`` (none when the port is 0)."""
    if not server.options.crl_http:
        return None
    with server.store.read() as tx:
        address, port = service_records.value(tx, "crl_http_address"), service_records.value(tx, "crl_http_port")
    if not port:
        return None
    responder = CrlResponder(server.store, server._run)  # pylint: disable=protected-access
    try:
        await responder.start(address, port)
    except OSError as exc:
        await server.stop()
        raise CapfError(f"crl_http_port: cannot listen on {address} port {port}: {exc.strerror or exc}") from None
    return responder


async def _reloads(server: CapfServer, reload_event: asyncio.Event) -> None:
    while True:
        await reload_event.wait()
        reload_event.clear()
        try:
            server.reload()
        except CapfError as exc:  # e.g. no active CAPF certificate: keep serving with what was read before
            log.error("CAPF service (pid %d): reload failed, serving on with the previous settings: %s",
                      os.getpid(), exc)


__all__ = ["CapfServer", "ServerOptions", "serve"]
