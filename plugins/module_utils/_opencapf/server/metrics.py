# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Prometheus metrics of the CAPF service (``serve --metrics-address``, ``metrics_address``).

Two kinds of figures, each taken where it is exact for the whole service:

* **Events** (sessions by outcome and operation, TLS handshake failures, sessions in flight, the
  enrolment latency histogram, lock-outs, online CA requests and their latency) happen in the worker
  processes. They are counted with ``prometheus_client``'s multiprocess mode: every process writes
  its own memory-mapped file in one directory under the state directory, emptied when the service
  starts, and a scrape sums the files of all of them, so the numbers are the service's since its
  start however many processes serve it. A worker that dies keeps its counts; its sessions in
  flight leave the sum (``mark_process_dead``).
* **State** (LSCs by status, LSCs expiring within 30 days, days left on the CAPF certificate, locked
  phones) is read from the store at each scrape through named ``store/`` functions: it is the same
  on every node sharing a store, and right after a restart too.

The endpoint is plain HTTP (prometheus_client's server, in a thread) in one process: the only
process, or worker 0 of several. When metrics are off, every recording function here does nothing.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import re

from ..dependencies import prometheus
from ..errors import CapfError
from ..store import capf_certificates, certificates, open_store
from ..store import phones as phone_records
from ..store import monitor as monitor_records
from ..vocabulary import format_utc, parse_utc, split_host_port, utc_now

log = logging.getLogger("opencapf.server")
ENV_DIRECTORY = "PROMETHEUS_MULTIPROC_DIR"
EXPIRING_DAYS = 30
# Seconds: a whole enrolment session (TLS, authentication, key generation on the phone, signing).
ENROLMENT_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
ONLINE_CA_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

_events = None  # this process's _Events while metrics are on


class _Events:
    """The event metrics; values live in the multiprocess directory."""

    def __init__(self, client):
        self.sessions = client.Counter("opencapf_sessions", "CAPF sessions by how they ended and their operation "
                                       "(refused and tls_failed connections have no operation).",
                                       ["outcome", "operation"], registry=None)
        self.handshake_failures = client.Counter("opencapf_tls_handshake_failures",
                                                 "Connections whose TLS handshake failed or timed out.", registry=None)
        self.in_flight = client.Gauge("opencapf_sessions_in_flight", "CAPF sessions holding a session slot now.",
                                      registry=None, multiprocess_mode="livesum")
        self.enrolment = client.Histogram("opencapf_enrolment_duration_seconds",
                                          "Duration of successful install_upgrade sessions.",
                                          buckets=ENROLMENT_BUCKETS, registry=None)
        self.lockouts = client.Counter("opencapf_lockouts", "Phones locked out after repeated wrong authentication "
                                       "strings.", registry=None)
        self.online_ca = client.Counter("opencapf_online_ca_requests", "Requests to the online CA by kind (submit, "
                                        "poll) and outcome (issued, pending, rejected, error).",
                                        ["request", "outcome"], registry=None)
        self.online_ca_latency = client.Histogram("opencapf_online_ca_request_duration_seconds",
                                                  "Duration of requests to the online CA by outcome.", ["outcome"],
                                                  buckets=ONLINE_CA_BUCKETS, registry=None)


def directory_for(state_dir: str, address: str) -> str:
    """The multiprocess directory of the service whose endpoint is ``address`` (one per endpoint, so
    that two services sharing a state directory never empty each other's)."""
    return os.path.join(state_dir, "metrics", re.sub(r"[^0-9A-Za-z.]+", "_", address).strip("_"))


def enable(directory: str) -> None:
    """Turn metrics on in this process and the processes it forks afterwards, with an empty
    ``directory`` (the counts of a previous run are removed: they start again at the service's start)."""
    global _events  # pylint: disable=global-statement
    client = prometheus()
    os.makedirs(directory, mode=0o700, exist_ok=True)
    for name in os.listdir(directory):
        if name.endswith(".db"):
            os.unlink(os.path.join(directory, name))
    os.environ[ENV_DIRECTORY] = directory
    # prometheus_client picks its value class when it is imported; the directory is known only now.
    client.values.ValueClass = client.values.get_value_class()
    _events = _Events(client)


def enabled() -> bool:
    return _events is not None


def session_recorded(outcome: str, operation: str, duration_ms: int) -> None:
    """A session (or a connection ended before its session) is on record in the store."""
    if _events is None:
        return
    _events.sessions.labels(outcome, operation or "").inc()
    if outcome == "tls_failed":
        _events.handshake_failures.inc()
    if outcome == "succeeded" and operation == "install_upgrade":
        _events.enrolment.observe(duration_ms / 1000.0)


def session_slot(delta: int) -> None:
    """A session took (+1) or gave back (-1) its session slot."""
    if _events is not None:
        _events.in_flight.inc(delta)


def locked_out() -> None:
    if _events is not None:
        _events.lockouts.inc()


def online_ca_request(request: str, outcome: str, seconds: float) -> None:
    """One request to the online CA: ``request`` submit or poll; ``outcome`` issued, pending, rejected or error."""
    if _events is not None:
        _events.online_ca.labels(request, outcome).inc()
        _events.online_ca_latency.labels(outcome).observe(seconds)


def process_ended(pid: int) -> None:
    """A worker process ended: its sessions are no longer in flight."""
    if _events is not None:
        prometheus().multiprocess.mark_process_dead(pid, os.environ[ENV_DIRECTORY])


class StoreCollector:
    """The figures of the store's state, read at each scrape on a store connection of the scrape's own."""

    def __init__(self, location: str, state_dir: str, client, clock=utc_now):
        self._location, self._state_dir, self._client, self._clock = location, state_dir, client, clock

    def collect(self):
        gauge = self._client.metrics_core.GaugeMetricFamily
        now = self._clock()
        try:
            store = open_store(self._location, state_dir=self._state_dir, actor="metrics", create=False)
            try:
                with store.read() as tx:
                    counts = certificates.lsc_counts(tx, format_utc(now))
                    expiring = certificates.installed_lscs_expiring_count(
                        tx, format_utc(now), format_utc(now + _dt.timedelta(days=EXPIRING_DAYS)))
                    locked = phone_records.locked_count(tx)
                    capf = capf_certificates.active(tx)
                    monitored = monitor_records.last_success(tx)
            finally:
                store.close()
        except CapfError as exc:
            log.warning("metrics: the store cannot be read: %s", exc)
            yield gauge("opencapf_store_up", "Whether the last scrape could read the store.", value=0)
            return
        yield gauge("opencapf_store_up", "Whether the last scrape could read the store.", value=1)
        lscs = gauge("opencapf_lscs", "LSC records in the store by status (expired: issued or installed, past "
                     "its notAfter).", labels=["status"])
        for status, count in sorted(counts.items()):
            lscs.add_metric([status], count)
        yield lscs
        yield gauge("opencapf_lscs_expiring_30d", f"Installed LSCs that expire within {EXPIRING_DAYS} days "
                    "(not expired yet).", value=expiring)
        yield gauge("opencapf_phones_locked", "Phones locked out now.", value=locked)
        if capf is not None:
            left = (parse_utc(capf["not_after"], "not_after") - now).total_seconds() / 86400.0
            yield gauge("opencapf_capf_certificate_days_left", "Days until the active CAPF certificate expires.",
                        value=round(left, 3))
        if monitored is not None:
            finished = parse_utc(monitored["finished_at"], "finished_at")
            yield gauge("opencapf_monitor_last_success_timestamp_seconds", "When the certificate monitor last "
                        "finished a check without failing (Unix time).", value=finished.timestamp())


class Endpoint:
    """The HTTP server of the metrics, in a thread of this process."""

    def __init__(self, address: str, location: str, state_dir: str):
        client = prometheus()
        registry = client.CollectorRegistry(auto_describe=False)
        client.multiprocess.MultiProcessCollector(registry, os.environ[ENV_DIRECTORY])
        registry.register(StoreCollector(location, state_dir, client))
        host, port = split_host_port(address)
        try:
            self._server, self._thread = client.start_http_server(port, host, registry=registry)
        except OSError as exc:
            raise CapfError(f"metrics_address {address}: cannot listen: {exc.strerror or exc}") from None
        log.info("metrics endpoint listening on http://%s/metrics (pid %d)", address, os.getpid())

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


__all__ = ["Endpoint", "StoreCollector", "directory_for", "enable", "enabled", "locked_out", "online_ca_request",
           "process_ended", "session_recorded", "session_slot"]
