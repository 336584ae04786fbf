"""Shared fixtures: the engine on sys.path, fresh stores, key material and openssl helpers."""

from __future__ import annotations

import os
import sys

import pytest

# Every audit event the tests make, and the services they start, is checked against its action's shape
# strictly (``store.audit_actions.STRICT``): an event of another shape fails the test that made it.
os.environ["OPENCAPF_AUDIT_STRICT"] = "1"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENGINE_PATH = os.path.join(ROOT, "plugins", "module_utils")
if ENGINE_PATH not in sys.path:
    sys.path.insert(0, ENGINE_PATH)

from _opencapf.ca import authority  # noqa: E402  pylint: disable=wrong-import-position
from _opencapf.store import open_store  # noqa: E402  pylint: disable=wrong-import-position
from _opencapf.dependencies import ec, rsa  # noqa: E402  pylint: disable=wrong-import-position
from _opencapf.simulator.manufacturing import ManufacturingCa  # noqa: E402  pylint: disable=wrong-import-position
from _opencapf.store import service as service_records  # noqa: E402  pylint: disable=wrong-import-position
from support.protocol import HAS_IPV6_LOOPBACK, RunningServer  # noqa: E402  pylint: disable=wrong-import-position
from support.postgres import postgres_dsn, postgres_server  # noqa: E402,F401  pylint: disable=wrong-import-position,unused-import
from support.slapd import SlapdError, SlapdServer  # noqa: E402  pylint: disable=wrong-import-position

BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(scope="session")
def slapd_server():
    """This test process's slapd (tests/support/slapd.py), empty but for the service account (tests add users under
    their own ou). A missing slapd fails the test with the command that installs it."""
    try:
        server = SlapdServer()
    except SlapdError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _state_dir_environment(monkeypatch):
    """The CLI's main() exports --state-dir to its own process's environment (OPENCAPF_STATE_DIR):
    a test calling main() in-process must not leave it to the tests that run after it."""
    monkeypatch.delenv("OPENCAPF_STATE_DIR", raising=False)


@pytest.fixture
def store_path(tmp_path):
    return str(tmp_path / "state" / "capf.db")


@pytest.fixture
def state_dir(store_path):
    """The state directory (secret.key, keys/) of the test store, whichever its backend."""
    return os.path.dirname(store_path)


@pytest.fixture(params=BACKENDS)
def store_location(request, store_path):
    """A fresh store location, once per backend: an SQLite file path, a PostgreSQL connection string
    (of a fresh database on the real server the tests start); open it with ``state_dir``."""
    if request.param == "sqlite":
        return store_path
    return request.getfixturevalue("postgres_dsn")


@pytest.fixture
def more_store_locations(store_location, tmp_path, request):
    """Further fresh store locations of the backend of ``store_location``: ``make(name)`` gives an SQLite
    file in a directory of its own, or another fresh database on the same PostgreSQL server."""
    made = []

    def make(name: str) -> str:
        if store_location.startswith("postgresql:"):
            server = request.getfixturevalue("postgres_server")
            made.append(server.create_database())
            return server.dsn(made[-1])
        return str(tmp_path / name / "capf.db")

    yield make
    for database in made:
        request.getfixturevalue("postgres_server").drop_database(database)


@pytest.fixture
def store_on_both(store_location, state_dir):
    """A fresh, migrated store, once per backend; a test module or directory makes it its ``store``."""
    opened = open_store(store_location, state_dir=state_dir, actor="test")
    yield opened
    opened.close()


@pytest.fixture
def store_options(store_location, state_dir):
    """The CLI options naming the test store, once per backend."""
    return ["--store", store_location, "--state-dir", state_dir]


def pytest_configure(config):
    config.addinivalue_line("markers", "both_backends: run the test once with an SQLite store and once with a "
                            "PostgreSQL one (the ``store`` fixture and everything built on it: ``ca_store``, "
                            "``capf_server``, ``store_cli``)")


def pytest_generate_tests(metafunc):
    if metafunc.definition.get_closest_marker("both_backends") and "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", BACKENDS, indirect=True)


@pytest.fixture
def backend(request):
    """The backend of the test's ``store``: SQLite, or each in turn for a test marked ``both_backends``."""
    return getattr(request, "param", "sqlite")


@pytest.fixture
def store(backend, request, store_path, state_dir):
    """A fresh, migrated store with no CAPF certificate yet: an SQLite file at ``store_path``, or (a test
    marked ``both_backends``) also a fresh PostgreSQL database; its key files in ``state_dir`` either way."""
    location = store_path if backend == "sqlite" else request.getfixturevalue("postgres_dsn")
    opened = open_store(location, state_dir=state_dir, actor="test")
    yield opened
    opened.close()


@pytest.fixture
def store_cli(store):
    """The CLI options naming the test's ``store``, whichever its backend."""
    return ["--store", store.location, "--state-dir", store.state_dir]


@pytest.fixture
def ca_store(store):
    """A fresh store with an RSA-2048 CAPF certificate."""
    authority.ensure(store)
    return store


@pytest.fixture(scope="session")
def rsa_phone_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def ec_phone_key():
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def capf_server(request, ca_store):
    """A running CAPF service on 127.0.0.1 (and ::1 when available), IPv6 enabled, on the test's store; on the
    asyncio event loop, or the one a test names with ``@pytest.mark.parametrize("capf_server", EVENT_LOOPS,
    indirect=True)``."""
    with ca_store.transaction() as tx:
        service_records.write(tx, "test", {"enable_ipv6": True})
    addresses = ("127.0.0.1", "::1") if HAS_IPV6_LOOPBACK else ("127.0.0.1",)
    running = RunningServer(ca_store, addresses, getattr(request, "param", "asyncio"), step_timeout=5.0,
                            handshake_timeout=5.0)
    yield running
    running.stop()


@pytest.fixture
def mic_ca(ca_store, tmp_path):
    """A manufacturing CA, trusted in CAPF-trust of the test store."""
    ca = ManufacturingCa.create(str(tmp_path / "mic-ca"))
    assert ca.trust_in(ca_store)
    return ca


@pytest.fixture
def est(pki, tmp_path):
    """A loopback EST CA of the test module's ``pki`` (support.third_party_ca) that holds every request
    for an hour: a request the CA holds is picked up in a later session, not polled in this one."""
    from support.third_party_ca import PASSWORD, USERNAME, EstServer  # pylint: disable=import-outside-toplevel

    with EstServer(pki, str(tmp_path / "est"), username=USERNAME, password=PASSWORD) as server:
        server.retry_after = 3600
        yield server
