"""The CAPF service serves on while its PostgreSQL store cannot be reached (the database down, or not
accepting connections): a phone that connects meanwhile hears that its session failed (END_SESSION),
the log says why and that the session is not recorded, with no traceback, and the process keeps
serving; once the database is back, the phone enrols (at its next try: the service tries the database
again every few seconds, off its event loop).

Real processes throughout: ``opencapf serve``, PostgreSQL (the store's database set not to accept
connections, and the service's sessions to it ended, as a database going down ends them) and the phone
simulator over real TLS."""

from __future__ import annotations

import time
from types import SimpleNamespace

import psycopg
import pytest

from support.phones import enrol_until_ok, phone, run_enrol
from support.protocol import add_phone, phone_row
from support.serving import Serving
from _opencapf.ca import authority

pytestmark = pytest.mark.parametrize("backend", ["postgresql"], indirect=True)

NAME = "SEP00000000CF01"
STEP_TIMEOUT = 2
BACK = 30.0  # seconds the phone may take to enrol once the database is back (the service tries it every few seconds)


def _database(location: str) -> str:
    with psycopg.connect(location) as connection:
        return connection.execute("SELECT current_database()").fetchone()[0]


def _away(watch, database: str) -> None:
    """The database accepts no connection, and the service's sessions to it are ended."""
    watch.execute(psycopg.sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(psycopg.sql.Identifier(database)))
    watch.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                  (database,))
    deadline = time.monotonic() + 30
    while watch.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                        (database,)).fetchone()[0]:
        assert time.monotonic() < deadline, "the service's database sessions did not end"
        time.sleep(0.05)


def _back(watch, database: str) -> None:
    watch.execute(psycopg.sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(psycopg.sql.Identifier(database)))


def test_a_phone_hears_its_session_failed_while_the_store_is_away_and_enrols_once_it_is_back(ca_store, tmp_path):
    add_phone(ca_store, NAME, operation="install_upgrade", key_order="ec")
    identity = phone(tmp_path, NAME)
    capf = SimpleNamespace(capf_pem=authority.current(ca_store)["pem"])
    serving = Serving.on(ca_store, tmp_path / "serve.log")
    database = _database(ca_store.location)
    # The watch connects to another database of the server: no database forbids its own connections.
    with psycopg.connect(ca_store.location, dbname="postgres", autocommit=True) as watch, \
            serving.start("--enrolment-interval", "0", "--step-timeout", str(STEP_TIMEOUT)):
        capf.port = serving.port
        _away(watch, database)
        try:
            away = run_enrol(identity, capf)
            text = serving.log()
        finally:
            _back(watch, database)
        again = enrol_until_ok(identity, capf, BACK)
        text_after = serving.log()
    assert away.outcome == "failed", away
    # The phone named itself; its operation could not be read.
    assert f"device {NAME} operation -: failed (" in text and "the session is not recorded" in text, text
    assert "not currently accepting connections" in text, text
    assert "Traceback" not in text_after and "internal error" not in text_after, text_after
    assert again.outcome == "ok", (again, text_after)
    assert phone_row(ca_store, NAME)["operation_status"] == "succeeded"
