# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""``scripts/hostile-load``: what idle hostile connections cost a real ``serve`` process in memory.

Opens N connections that never authenticate, in three kinds taken in turn: silent TCP (connect,
send nothing), a complete TLS ClientHello and then silence (the server has answered and waits for
the client's Finished), and a stalled handshake (half a ClientHello). They come from loopback
source addresses 127.0.0.21 upwards, at most ``--per-address`` from each, so the per-address limit
does not refuse them. The server's resident set size (VmRSS from /proc) is read at idle (after one
complete handshake), while all N are open, and after they were closed and the server recorded
every one of them. The handshake deadline is far beyond the run, so connections stay open until
the tool closes them.

    scripts/hostile-load                      # 900 connections (the run in docs/reliability.md)
    scripts/hostile-load --connections 300    # seconds
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time

from . import serving
from .harness import Figure, benchmark

KINDS = ("silent_tcp", "client_hello_then_silence", "stalled_handshake")
FIRST_SOURCE = 21  # 127.0.0.21, .22, ...


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scripts/hostile-load", description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--connections", type=int, default=900, help="hostile connections held open (default 900)")
    parser.add_argument("--per-address", type=int, default=90,
                        help="connections from one source address (default 90, within max_sessions_per_address)")
    parser.add_argument("--max-connections", type=int, default=None,
                        help="pass --max-connections to serve (default: serve's own default)")
    parser.add_argument("--settle", type=float, default=3.0,
                        help="seconds to let the server take every connection before reading its memory")
    parser.add_argument("--json", default=os.path.join("bench-results", "hostile.json"), metavar="PATH",
                        help="result file (default bench-results/hostile.json)")
    parser.add_argument("--work-dir", metavar="DIR", help="scratch directory (default: the system temporary directory)")
    parser.add_argument("--serve-env", action="append", default=[], metavar="NAME=VALUE",
                        help="an environment variable for the serve process (repeatable), e.g. MALLOC_ARENA_MAX=2")
    return parser


def client_hello() -> bytes:
    """The bytes of a real TLS ClientHello."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing)
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def _prepare(store_path: str) -> None:
    from _opencapf.ca import authority
    from _opencapf.store import open_store
    store = open_store(store_path, actor="hostile-load")
    try:
        authority.ensure(store)
    finally:
        store.close()


def _warm_up(port: int) -> None:
    """One complete handshake, so that the TLS context is loaded before the idle figure."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=30) as raw, context.wrap_socket(raw) as tls:
        tls.recv(4096)  # the server's AUTH_REQUEST


def open_hostile(port: int, count: int, per_address: int) -> list[socket.socket]:
    hello = client_hello()
    payloads = {"silent_tcp": b"", "client_hello_then_silence": hello, "stalled_handshake": hello[:len(hello) // 2]}
    held = []
    try:
        for index in range(count):
            source = f"127.0.0.{FIRST_SOURCE + index // per_address}"
            sock = socket.create_connection(("127.0.0.1", port), timeout=30, source_address=(source, 0))
            held.append(sock)
            payload = payloads[KINDS[index % len(KINDS)]]
            if payload:
                sock.sendall(payload)
    except BaseException:
        close_all(held)
        raise
    return held


def close_all(held: list[socket.socket]) -> None:
    for sock in held:
        sock.close()


def recorded(store_path: str, at_least: int, timeout: float = 120.0) -> dict:
    """Session outcomes on record once at least ``at_least`` sessions are (bounded wait)."""
    from _opencapf.store import open_store
    from _opencapf.store import sessions as session_records
    store = open_store(store_path, actor="hostile-load", create=False)
    try:
        deadline = time.monotonic() + timeout
        while True:
            with store.read() as tx:
                rows = session_records.recent(tx, limit=at_least + 1000)
            if len(rows) >= at_least or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    finally:
        store.close()
    outcomes: dict = {}
    for row in rows:
        outcomes[row["outcome"]] = outcomes.get(row["outcome"], 0) + 1
    return outcomes


def settle(pid: int, seconds: float) -> dict:
    """The process's memory once it stopped growing (at most ``seconds`` more after the first read)."""
    deadline = time.monotonic() + seconds
    last = serving.memory(pid)
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = serving.memory(pid)
        if abs(now["VmRSS"] - last["VmRSS"]) < 0.5:
            return now
        last = now
    return last


def measure(connections: int, per_address: int, settle_seconds: float, extra: list[str], env: dict,
            scratch: str) -> dict:
    store_path = os.path.join(scratch, "capf.db")
    _prepare(store_path)
    log_path = os.path.join(scratch, "serve.log")
    with open(log_path, "w", encoding="utf-8") as log:
        server, port = serving.start(store_path, log, ["--handshake-timeout", "300", "--queue-timeout", "300", *extra],
                                     tool="hostile-load", env=env)
        try:
            _warm_up(port)
            time.sleep(0.5)
            idle = serving.memory(server.pid)
            started = time.monotonic()
            held = open_hostile(port, connections, per_address)
            try:
                time.sleep(settle_seconds)
                during = settle(server.pid, settle_seconds)
            finally:
                close_all(held)
            outcomes = recorded(store_path, connections + 1)
            time.sleep(settle_seconds)  # the service reclaims the memory of a burst a little after it ended
            after = settle(server.pid, settle_seconds)
            elapsed = time.monotonic() - started
        finally:
            server.terminate()
            try:
                server.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()
                server.communicate()
    with open(log_path, encoding="utf-8") as handle:
        server_log = handle.read()
    growth = during["VmRSS"] - idle["VmRSS"]
    return {
        "connections": connections,
        "kinds": list(KINDS),
        "server_rss_mib": {"idle": idle["VmRSS"], "open": during["VmRSS"], "closed": after["VmRSS"],
                           "peak": after["VmHWM"]},
        "growth_per_connection_kib": round(growth * 1024 / max(connections, 1), 1),
        "retained_after_close_mib": round(after["VmRSS"] - idle["VmRSS"], 1),
        "sessions_by_outcome": outcomes,
        "elapsed_seconds": round(elapsed, 1),
        "server_exit_code": server.returncode,
        "server_tracebacks": server_log.count("Traceback"),
    }


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    extra = [] if args.max_connections is None else ["--max-connections", str(args.max_connections)]
    env = dict(item.split("=", 1) for item in args.serve_env)
    scratch = tempfile.mkdtemp(prefix="opencapf-hostile-", dir=args.work_dir)
    try:
        report = measure(args.connections, args.per_address, args.settle, extra, env, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    report.update({
        "serve_options": extra, "serve_env": env,
        "load_average": [round(value, 2) for value in os.getloadavg()], "cpus": os.cpu_count(),
        "python": sys.version.split()[0], "openssl": ssl.OPENSSL_VERSION,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": "scripts/hostile-load" + ("" if args.connections == 900 else f" --connections {args.connections}"),
    })
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2)
        handle.write("\n")
    rss = report["server_rss_mib"]
    sys.stdout.write(
        f"{report['connections']} hostile connections: server RSS idle {rss['idle']} MiB, open {rss['open']} MiB "
        f"({report['growth_per_connection_kib']} KiB per connection), closed {rss['closed']} MiB "
        f"(+{report['retained_after_close_mib']} MiB), sessions {report['sessions_by_outcome']}\n"
        f"results: {args.json}\n")
    return 0 if report["server_tracebacks"] == 0 and report["server_exit_code"] == 0 else 1


# --- bytes per idle connection (scripts/bench) --------------------------------------------------

IDLE_KINDS = {
    "tcp": "TCP connected, no TLS ClientHello",
    "hello": "a ClientHello sent, the server's answer unread: the handshake waits for the client's Finished",
    "tls": "TLS handshake done and the server's AUTH_REQUEST received, no CAPF message from the client",
}
IDLE_FIGURES = {"tcp": "hostile.idle_tcp_connection_bytes", "hello": "hostile.idle_handshake_connection_bytes",
                "tls": "hostile.idle_tls_connection_bytes"}
IDLE_PER_ADDRESS = 100  # within the default max_sessions_per_address
# Deadlines far beyond the run: nothing may end an idle connection while it is measured.
IDLE_SERVE_OPTIONS = ["--handshake-timeout", "300", "--step-timeout", "900", "--queue-timeout", "300"]


def _client_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def open_idle(port: int, count: int, kind: str, per_address: int = IDLE_PER_ADDRESS) -> list[socket.socket]:
    """``count`` connections of ``kind`` (``IDLE_KINDS``), from 127.0.0.21 upwards, left idle."""
    context = _client_context()
    hello = client_hello()
    held = []
    try:
        for index in range(count):
            source = f"127.0.0.{FIRST_SOURCE + index // per_address}"
            sock = socket.create_connection(("127.0.0.1", port), timeout=60, source_address=(source, 0))
            if kind == "tls":
                try:
                    sock = context.wrap_socket(sock)
                    sock.recv(4096)  # the AUTH_REQUEST: the server has its session running
                except BaseException:
                    sock.close()
                    raise
            elif kind == "hello":
                sock.sendall(hello)
            held.append(sock)
    except BaseException:
        close_all(held)
        raise
    return held


def _status_kib(pid: int) -> dict:
    found = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        for line in handle:
            key, _sep, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(value.split()[0])
    return found


def _settled_kib(pid: int, seconds: float) -> dict:
    """VmRSS once it stopped moving (two reads 0.25 s apart within 64 KiB), at most ``seconds``."""
    deadline = time.monotonic() + seconds
    last = _status_kib(pid)
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = _status_kib(pid)
        if abs(now["VmRSS"] - last["VmRSS"]) <= 64:
            return now
        last = now
    return last


def idle_connection_cost(kind: str, count: int, scratch: str, settle_seconds: float = 5.0) -> dict:
    """What ``count`` idle connections of ``kind`` add to a fresh ``serve`` process's resident set."""
    store_path = os.path.join(scratch, f"idle-{kind}.db")
    _prepare(store_path)
    with open(os.path.join(scratch, f"idle-{kind}.log"), "w", encoding="utf-8") as log:
        server, port = serving.start(store_path, log, IDLE_SERVE_OPTIONS, tool="bench", env={})
        try:
            _warm_up(port)
            close_all(open_idle(port, 3, kind))  # the code paths of this kind, run once before the figure
            time.sleep(1.0)
            idle = _settled_kib(server.pid, settle_seconds)
            held = open_idle(port, count, kind)
            try:
                busy = _settled_kib(server.pid, settle_seconds)
            finally:
                close_all(held)
        finally:
            server.terminate()
            try:
                server.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()
                server.communicate()
    growth = (busy["VmRSS"] - idle["VmRSS"]) * 1024
    return {"connections": count, "kind": IDLE_KINDS[kind], "server_rss_idle_bytes": idle["VmRSS"] * 1024,
            "server_rss_open_bytes": busy["VmRSS"] * 1024, "server_peak_rss_bytes": busy["VmHWM"] * 1024,
            "bytes_per_connection": round(growth / count), "server_exit_code": server.returncode}


@benchmark("hostile.idle_connections", (*IDLE_FIGURES.values(), "hostile.idle_connection_bytes"), timeout=900)
def idle_connections(ctx):
    """Bytes of server memory per idle unauthenticated connection, each kind on a fresh ``serve``;
    ``hostile.idle_connection_bytes`` is the costliest kind: what a client that stops anywhere
    before its first CAPF message may cost."""
    count = ctx.size(500, 20)
    figures = {}
    for kind, name in IDLE_FIGURES.items():
        details = idle_connection_cost(kind, count, ctx.work_dir)
        figures[name] = Figure(max(details["bytes_per_connection"], 1), "bytes",
                               f"server RSS growth per idle connection ({details['kind']}), {count} at once",
                               details=details)
    worst = max(IDLE_FIGURES.values(), key=lambda name: figures[name].value)
    figures["hostile.idle_connection_bytes"] = Figure(
        figures[worst].value, "bytes", "server RSS growth per idle unauthenticated connection, the costliest of "
        f"{', '.join(IDLE_FIGURES.values())}", details={"costliest": worst, **figures[worst].details})
    return figures


if __name__ == "__main__":
    sys.exit(main())
