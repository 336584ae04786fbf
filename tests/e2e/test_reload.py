"""SIGHUP (``systemctl reload``) in a real ``opencapf serve``: the service keeps running and serving,
reads the service parameters and the CAPF certificate again, reopens its log file after a
logrotate-style rename (supervisor and workers alike), and names a changed setting that needs a
restart."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
import types

import pytest

from support.phones import run_enrol
from support.protocol import add_phone
from support.serving import Serving, alive, children, wait_for
from support.tools import run_cli
from _opencapf import service_config, service_control
from _opencapf.ca import authority
from _opencapf.dependencies import ec
from _opencapf.simulator.identity import PhoneIdentity, PhoneSettings
from _opencapf.store import service as service_records

RELOADED = re.compile(r"CAPF service \(pid (\d+)\) reloaded")


def _text(path):
    return path.read_text() if path.exists() else ""


def _phone(name):
    return PhoneIdentity(PhoneSettings(name, auth_mode="null_string"),
                         key_factory=lambda kind, size: ec.generate_private_key(ec.SECP256R1()))


@pytest.mark.parametrize("processes, loop", [(1, "asyncio"), (2, "asyncio"), (1, "uvloop"), (2, "uvloop")])
def test_sighup_reloads_reopens_the_log_file_and_the_service_goes_on(ca_store, store_path, tmp_path, processes, loop):
    for name in ("SEP0000000E0001", "SEP0000000E0002"):
        add_phone(ca_store, name, operation="install_upgrade", auth_mode="null_string", key_order="ec")
    pid_file, log_file, rotated = tmp_path / "capf.pid", tmp_path / "capf.log", tmp_path / "capf.log.1"
    done = run_cli("--store", store_path, "serve", "--daemon", "--processes", str(processes), "--listen", "127.0.0.1",
                   "--port", "0", "--pid-file", str(pid_file), "--log-file", str(log_file), "--enrolment-interval",
                   "0", "--event-loop", loop, timeout=60)
    assert done.returncode == 0, done.stderr
    server = types.SimpleNamespace(port=int(re.search(r"port (\d+)", done.stdout).group(1)),
                                   capf_pem=authority.current(ca_store)["pem"])
    pid = int(pid_file.read_text())
    workers = children(pid) if processes > 1 else []
    try:
        assert run_enrol(_phone("SEP0000000E0001"), server).outcome == "ok"
        os.rename(log_file, rotated)  # logrotate moves the file away, then reloads the service
        with ca_store.transaction() as tx:
            service_records.write(tx, "test", {"validity_days": 30})
        authority.regenerate(ca_store, "ec256")
        os.kill(pid, signal.SIGHUP)
        assert wait_for(lambda: len(RELOADED.findall(_text(log_file))) == processes, 30), _text(log_file) + _text(rotated)
        assert alive(pid) and (processes == 1 or children(pid) == workers), "SIGHUP must not end a process"
        server.capf_pem = authority.current(ca_store)["pem"]
        result = run_enrol(_phone("SEP0000000E0002"), server)  # verifies the server against the new certificate
        assert result.outcome == "ok", result
    finally:
        for process in [pid] + [worker for worker in workers if not alive(pid)]:  # orphans of a dead supervisor too
            if alive(process):
                os.kill(process, signal.SIGTERM)
        stopped = wait_for(lambda: not any(alive(process) for process in [pid, *workers]), 60)
    with ca_store.read() as tx:
        lsc = tx.one("SELECT not_before, not_after FROM certificates c JOIN phones p ON p.id = c.phone_id "
                     "WHERE p.name = 'SEP0000000E0002' AND c.kind = 'lsc'")
    assert stopped and lsc is not None
    days = (_utc(lsc["not_after"]) - _utc(lsc["not_before"])) / 86400
    assert 29 <= days <= 31, lsc  # the validity set before the reload
    old, new = _text(rotated), _text(log_file)
    assert "device SEP0000000E0001 operation install_upgrade: succeeded" in old
    assert "SEP0000000E0002" not in old and "stopped" not in old, old  # nothing more went to the moved file
    assert "device SEP0000000E0002 operation install_upgrade: succeeded" in new and "CAPF service stopped" in new, new
    assert sorted(int(p) for p in RELOADED.findall(new)) == (workers or [pid])
    assert old.count(f"runs on the {loop} event loop") == processes, old  # each serving process, on that loop
    assert new.count("log file") >= processes + (1 if processes > 1 else 0), new  # supervisor and each worker
    assert "Traceback" not in old + new


def _utc(text):
    from _opencapf.vocabulary import parse_utc
    return parse_utc(text, "time").timestamp()


@pytest.mark.both_backends
def test_sighup_in_the_foreground_names_a_setting_that_needs_a_restart(ca_store, tmp_path):
    with Serving.on(ca_store, tmp_path / "serve.log").start("--enrolment-interval", "0") as serving:
        with ca_store.transaction() as tx:
            service_records.write(tx, "test", {"port": 3805, "max_sessions": 50})
        for _signal in range(2):
            serving.process.send_signal(signal.SIGHUP)
            time.sleep(0.3)
        assert wait_for(lambda: len(RELOADED.findall(serving.log())) == 2, 20)
        assert serving.alive() and service_control.accepts_tls("127.0.0.1", serving.port)
    text = serving.log()
    assert serving.returncode == 0 and "Traceback" not in text, text
    assert "port changed from 3804 to 3805; it takes effect when the service restarts" in text, text
    assert "max_sessions changed" not in text  # applies at once: nothing to restart for


def _launcher(argv, env):
    done = subprocess.run(argv, env={**os.environ, **env}, cwd=env["OPENCAPF_STATE_DIR"], capture_output=True,
                          text=True, timeout=120, check=False)
    return done.returncode, done.stdout, done.stderr


def test_capf_service_state_reloaded_sighups_the_running_daemon_and_starts_a_stopped_one(ca_store):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    service_config.converge(ca_store, parameters_wanted={"port": port, "listen_addresses": ["127.0.0.1"]})
    log_file = service_control.paths(ca_store)["log_file"]
    try:
        started = service_control.converge(ca_store, "reloaded", _launcher)  # not running: started
        assert started["changed"] and started["service"]["state"] == "started", started
        pid = started["service"]["pid"]
        checked = service_control.converge(ca_store, "reloaded", None, check_mode=True)
        assert checked["changed"] and not RELOADED.search(open(log_file, encoding="utf-8").read())
        reloaded = service_control.converge(ca_store, "reloaded", None)
        assert reloaded["changed"] and reloaded["service"]["pid"] == pid and reloaded["service"]["accepting"]
        assert wait_for(lambda: RELOADED.search(open(log_file, encoding="utf-8").read()), 30)
    finally:
        service_control.stop(ca_store)
