"""service_control: engine extraction for the daemon, status over a real TLS listener, stop by pid file."""

from __future__ import annotations

import ast
import importlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading

import pytest

from _opencapf import bundle, service_config, service_control
from _opencapf.ca import authority, keys

PACKAGE_DIR = os.path.dirname(bundle.__file__)


def test_bundle_lists_every_engine_file_and_imports_it():
    on_disk = sorted(os.path.relpath(os.path.join(d, f), PACKAGE_DIR).replace(os.sep, "/")
                     for d, _dirs, files in os.walk(PACKAGE_DIR) for f in files if f.endswith(".py"))
    assert sorted(bundle.PACKAGE_FILES) == on_disk
    tree = ast.parse(open(bundle.__file__, encoding="utf-8").read())
    imported = {"__init__.py", "bundle.py", "ca/__init__.py", "cli/__init__.py", "store/__init__.py"}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            prefix = (node.module.replace(".", "/") + "/") if node.module else ""
            if prefix:
                imported.add(prefix + "__init__.py")
            for alias in node.names:
                imported.add(prefix + alias.name + ".py")
    assert imported == set(on_disk)


def test_every_engine_file_is_the_module_its_name_imports():
    """A package directory shadows a module file of the same name (``x/`` hides ``x.py``): the file would be
    dead code to every import and missing from a module's AnsiballZ zip, so the engine extraction fails."""
    for relative in bundle.PACKAGE_FILES:
        dotted = "_opencapf." + relative[:-3].replace("/", ".")
        dotted = dotted[:-len(".__init__")] if dotted.endswith(".__init__") else dotted
        module = importlib.import_module(dotted)
        assert os.path.samefile(module.__file__, os.path.join(PACKAGE_DIR, relative)), (relative, module.__file__)


def test_extract_engine_runs_stand_alone_and_refreshes_only_on_change(tmp_path):
    root = str(tmp_path / "engine")
    path, written = service_control.extract_engine(root)
    assert written is True and path == root
    assert oct(os.stat(os.path.join(root, "_opencapf")).st_mode & 0o777) == "0o700"
    assert service_control.extract_engine(root)[1] is False
    decoy = tmp_path / "_opencapf"  # a package in the working directory must not shadow the engine
    decoy.mkdir()
    (decoy / "__init__.py").write_text("")
    (decoy / "__main__.py").write_text("raise SystemExit(3)\n")
    result = subprocess.run([sys.executable, "-P", "-m", "_opencapf", "--version"], capture_output=True, text=True,
                            env={"PYTHONPATH": root, "PATH": os.environ.get("PATH", "")}, cwd=str(tmp_path), timeout=60,
                            check=False)
    assert result.returncode == 0 and result.stdout.startswith("opencapf ")
    with open(os.path.join(root, "_opencapf", "errors.py"), "a", encoding="utf-8") as handle:
        handle.write("# tampered\n")
    os.unlink(os.path.join(root, service_control.STAMP_FILE))
    assert service_control.extract_engine(root)[1] is True
    assert "# tampered" not in open(os.path.join(root, "_opencapf", "errors.py"), encoding="utf-8").read()


def test_start_command_puts_the_extracted_engine_on_the_path(ca_store):
    argv, env = service_control.start_command(ca_store, "/usr/bin/python3")
    assert argv[:6] == ["/usr/bin/python3", "-P", "-m", "_opencapf", "--store", ca_store.location]
    assert argv[6:8] == ["serve", "--daemon"]
    assert env["PYTHONPATH"] == os.path.join(ca_store.state_dir, "engine")


def test_start_reports_a_launcher_failure(ca_store):
    with pytest.raises(Exception) as failure:
        service_control.start(ca_store, lambda argv, env: (2, "", "opencapf: error: invalid choice: 'serve'\n"),
                              timeout=1)
    assert "did not start (exit status 2): opencapf: error: invalid choice: 'serve'" in str(failure.value)


class _TlsListener:
    """A real TLS server on loopback using the store's CAPF certificate."""

    def __init__(self, store, tmp_path):
        signer = authority.signer(store)
        cert = tmp_path / "cert.pem"
        key = tmp_path / "key.pem"
        cert.write_text(authority.current(store)["pem"])
        key.write_bytes(keys.private_key_pem(signer.private_key))
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(str(cert), str(key))
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(5)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stop:
            try:
                conn, _peer = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                conn.settimeout(5)
                with self.context.wrap_socket(conn, server_side=True):
                    pass
            except OSError:
                pass

    def close(self):
        self.stop = True
        self.thread.join(10)
        self.sock.close()


def test_status_and_stop_with_a_real_listener_and_process(ca_store, tmp_path):
    listener = _TlsListener(ca_store, tmp_path)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "opencapf-test-daemon"])
    try:
        service_config.converge(ca_store, parameters_wanted={"port": listener.port, "listen_addresses": ["127.0.0.1"]})
        assert service_control.status(ca_store)["state"] == "stopped"  # no pid file yet
        with open(service_control.paths(ca_store)["pid_file"], "w", encoding="ascii") as handle:
            handle.write(f"{child.pid}\n")
        status = service_control.status(ca_store)
        assert status == {"state": "started", "pid": child.pid, "running": True, "accepting": True,
                          "address": "127.0.0.1", "port": listener.port, "enrolment_service": "inactive"}
        unchanged = service_control.converge(ca_store, "started", lambda a, e: (1, "", "must not be called"))
        assert unchanged["changed"] is False
        checked = service_control.converge(ca_store, "stopped", None, check_mode=True)
        assert checked["changed"] is True and child.poll() is None
        stopped = service_control.converge(ca_store, "stopped", None, timeout=10)
        assert stopped["changed"] is True and stopped["after"] == {"state": "stopped"}
        assert child.wait(10) == -signal.SIGTERM
        assert not os.path.exists(service_control.paths(ca_store)["pid_file"])
    finally:
        listener.close()
        if child.poll() is None:
            child.kill()
            child.wait(10)


def test_stop_leaves_a_foreign_pid_alone(ca_store):
    with open(service_control.paths(ca_store)["pid_file"], "w", encoding="ascii") as handle:
        handle.write(f"{os.getppid()}\n")
    assert service_control.stop(ca_store) is False
