"""A real PostgreSQL server for the tests: Debian's ``postgresql`` package, started by the tests.

One server per test process (each pytest-xdist worker starts its own), in a private temporary
directory, listening only on a unix socket there; password (SCRAM) authentication with a password
file named in every connection string (``passfile=``). PostgreSQL refuses to run as root: as root
the server runs as the ``postgres`` user the package creates. Each test gets a fresh database.

A missing or broken server fails the test with the command that installs it; it never skips.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import urllib.parse

import pytest

INSTALL = "apt-get update && apt-get install -y postgresql"
SUPERUSER = "opencapf"
SERVER_USER = "postgres"  # created by Debian's postgresql package


def _bin_dir() -> str:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda path: int(path.split("/")[4]))
    if not found:
        pytest.fail(f"PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin: run `{INSTALL}` "
                    "(scripts/test-unit does it when run as root)", pytrace=False)
    return os.path.dirname(found[-1])


class PostgresServer:
    """A running server; ``dsn(database)`` names one of its databases (no password in it). Commits are not
    flushed to disk (tests need no durability) unless ``durable`` (benchmarks compare with SQLite's FULL)."""

    def __init__(self, durable: bool = False):
        self.durable = durable
        self.bin = _bin_dir()
        self.root = tempfile.mkdtemp(prefix="opencapf-pg-")
        self.data = os.path.join(self.root, "data")
        self.socket_dir = self.root
        self.passfile = os.path.join(self.root, "pgpass")
        self._counter = 0
        self._run_as = []
        if os.geteuid() == 0:
            try:
                account = pwd.getpwnam(SERVER_USER)
            except KeyError:
                pytest.fail(f"user {SERVER_USER!r} missing (PostgreSQL refuses to run as root): run `{INSTALL}`",
                            pytrace=False)
            os.chown(self.root, account.pw_uid, account.pw_gid)
            self._run_as = ["runuser", "-u", SERVER_USER, "--"]
        password = secrets.token_urlsafe(24)
        pwfile = os.path.join(self.root, "initdb-password")
        for path, text in ((pwfile, password + "\n"), (self.passfile, f"*:*:*:{SUPERUSER}:{password}\n")):
            with open(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600), "w", encoding="ascii") as handle:
                handle.write(text)
        if self._run_as:
            account = pwd.getpwnam(SERVER_USER)
            os.chown(pwfile, account.pw_uid, account.pw_gid)
        self._server(["initdb", "-D", self.data, "-U", SUPERUSER, "--pwfile", pwfile, "--auth", "scram-sha-256",
                      "--encoding", "UTF8", "--locale", "C", "--no-sync"])
        os.unlink(pwfile)
        self._start()
        self.admin.execute("CREATE DATABASE template_store TEMPLATE template0 ENCODING 'UTF8' LOCALE 'C' "
                           "STRATEGY FILE_COPY")

    def _start(self) -> None:
        durability = "" if self.durable else "-c fsync=off -c full_page_writes=off "
        options = (f"-k {self.socket_dir} -c listen_addresses='' {durability}"
                   "-c max_connections=200 -c shared_buffers=32MB")
        self._server(["pg_ctl", "-D", self.data, "-l", os.path.join(self.data, "server.log"), "-o", options,
                      "-w", "-t", "60", "start"])
        self.admin = self.connect("postgres")

    def restart(self) -> None:
        """Stop the server as an administrator would (``pg_ctl stop -m fast``: every connection is
        cut) and start it again."""
        self.admin.close()
        self._server(["pg_ctl", "-D", self.data, "-m", "fast", "-w", "-t", "60", "stop"])
        self._start()

    def _server(self, command: list[str]) -> None:
        result = subprocess.run(self._run_as + [os.path.join(self.bin, command[0]), *command[1:]],
                                capture_output=True, text=True, check=False, timeout=120)
        if result.returncode != 0:
            log = os.path.join(self.data, "server.log")
            tail = ""
            if os.path.exists(log):
                with open(log, encoding="utf-8") as handle:
                    tail = handle.read()[-2000:]
            pytest.fail(f"PostgreSQL {command[0]} failed ({result.returncode}): {result.stderr.strip()}\n{tail}",
                        pytrace=False)

    def dsn(self, database: str) -> str:
        query = urllib.parse.urlencode({"host": self.socket_dir, "user": SUPERUSER, "passfile": self.passfile})
        return f"postgresql:///{database}?{query}"

    def connect(self, database: str):
        import psycopg

        return psycopg.connect(self.dsn(database), autocommit=True)

    def create_database(self) -> str:
        self._counter += 1
        name = f"store_{os.getpid()}_{self._counter}"
        self.admin.execute(f"CREATE DATABASE {name} TEMPLATE template_store STRATEGY FILE_COPY")
        return name

    def drop_database(self, name: str) -> None:
        self.admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def stop(self) -> None:
        self.admin.close()
        subprocess.run(self._run_as + [os.path.join(self.bin, "pg_ctl"), "-D", self.data, "-m", "immediate", "-w",
                                       "stop"], capture_output=True, check=False, timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server():
    """This test process's PostgreSQL server."""
    server = PostgresServer()
    yield server
    server.stop()


@pytest.fixture
def postgres_dsn(postgres_server):
    """The connection string of a fresh, empty database (no CAPF schema yet)."""
    name = postgres_server.create_database()
    yield postgres_server.dsn(name)
    postgres_server.drop_database(name)
