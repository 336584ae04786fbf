"""What relying parties fetch over HTTP from a cluster tells the truth about revocation.

Two ``opencapf serve`` nodes on one PostgreSQL store (two hosts), one of them with ``--processes 2``
and the HTTP CRL responder; LSCs are revoked by another host (the CLI: by phone and by serial; a phone
removed through another store connection), and the CAPF certificate is regenerated in between. Every
CRL fetched over HTTP, at ``/capf.crl`` and at each CAPF certificate's own ``/capf-ID.crl``:

* passes ``openssl crl -verify`` against its issuer, with thisUpdate <= now < nextUpdate;
* never lists a serial that is not revoked, and, once a CRL of an issuer listed a serial, every later
  one of that issuer lists it (a revocation is final);
* per issuer, a CRL number never goes back and one number is always the same CRL;
* lists a revoked LSC within the propagation bound docs/lifecycle.md states (one scheduler interval
  after the revocation commits, plus the leader's tick), whichever node signs;

and at the end ``openssl verify -crl_check`` refuses exactly the revoked LSCs with the CRLs fetched."""

from __future__ import annotations

import os
import socket
import time
import urllib.request

import pytest

from support.cluster import Cluster, prepare
from support.serving import wait_for
from support.tools import openssl, run_cli
from _opencapf import phone_config
from _opencapf.ca import authority, lsc
from _opencapf.ca import crl as crl_module
from _opencapf.dependencies import ec, x509
from _opencapf.store import certificates as certificate_records
from _opencapf.store import open_store
from _opencapf.store import phones as phone_records
from _opencapf.store import service as service_records
from _opencapf.vocabulary import utc_now

INTERVAL = 1  # scheduler_interval_seconds
BOUND = INTERVAL + 4  # the interval, and what a tick on a busy 2-core test machine may take
NAMES = [f"SEP0000C41E{index:04X}" for index in range(4)]


@pytest.fixture
def shared_state(tmp_path):
    path = tmp_path / "state"
    path.mkdir(mode=0o700)
    return str(path)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _RelyingParty:
    """Fetches the CRLs over HTTP and checks each one it gets against the store and what it saw before."""

    def __init__(self, store, port: int, tmp_path):
        self.store, self.base, self.tmp_path = store, f"http://127.0.0.1:{port}", tmp_path
        self.numbers: dict[str, int] = {}  # issuer fingerprint: the highest CRL number fetched
        self.bodies: dict[int, bytes] = {}
        self.listed: dict[str, set[str]] = {}  # issuer fingerprint: serials once listed
        self.verified: set[int] = set()

    def fetch(self, fingerprint: str | None = None) -> set[str]:
        """The serials listed by the CRL at ``/capf-ID.crl`` (``/capf.crl`` for None), checked."""
        path = crl_module.CRL_PATH if fingerprint is None else crl_module.issuer_location(crl_module.CRL_PATH,
                                                                                          fingerprint)
        with urllib.request.urlopen(self.base + path, timeout=10) as response:
            assert response.headers["Content-Type"] == "application/pkix-crl"
            der = response.read()
        fetched_at = utc_now()
        with self.store.read() as tx:
            revoked = {row["serial"] for row in certificate_records.revoked_lscs(tx, "capf")}
        history = {row["fingerprint"]: row for row in authority.history(self.store)}
        crl = x509.load_der_x509_crl(der)
        if fingerprint is None:
            fingerprint = next(key for key, row in history.items() if row["active"])
        issuer = x509.load_pem_x509_certificate(history[fingerprint]["pem"].encode("ascii"))
        assert crl.issuer == issuer.subject
        number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
        assert self.bodies.setdefault(number, der) == der, ("one CRL number, two CRLs", number)
        assert number >= self.numbers.get(fingerprint, 0), ("a CRL number went back", number)
        self.numbers[fingerprint] = number
        assert crl.last_update_utc <= fetched_at < crl.next_update_utc
        listed = {format(entry.serial_number, "x") for entry in crl}
        assert listed <= revoked, ("listed but not revoked", listed - revoked)
        assert self.listed.get(fingerprint, set()) <= listed, ("a revoked LSC left the CRL", fingerprint[:16])
        self.listed[fingerprint] = listed
        if number not in self.verified:
            crl_pem = self.tmp_path / f"crl-{number}.pem"
            crl_pem.write_text(crl_module.to_pem(der))
            capf_pem = self.tmp_path / f"capf-{fingerprint[:16]}.pem"
            capf_pem.write_text(history[fingerprint]["pem"])
            verified = openssl("crl", "-in", str(crl_pem), "-CAfile", str(capf_pem), "-noout")
            assert b"verify OK" in verified.stdout + verified.stderr
            self.verified.add(number)
        return listed

    def lists_within_bound(self, serial: str, fingerprint: str, committed: float) -> float:
        """Fetch until the issuer's CRL lists ``serial``; the seconds it took after the commit."""
        while serial not in self.fetch(fingerprint):
            assert time.monotonic() - committed < BOUND, f"{serial} not on the CRL {BOUND} s after its revocation"
            time.sleep(0.1)
        return time.monotonic() - committed


def _issue(store, name, key):
    issued = lsc.issue(store, name, key.public_key(), source="capf", validity_days=30)
    with store.transaction() as tx:
        certificate_records.install(tx, "test", phone_records.get(tx, name), issued.id)
    return issued


def test_two_nodes_serve_crls_that_list_every_revocation_within_the_bound(postgres_dsn, shared_state, tmp_path):
    crl_dir = tmp_path / "www"
    crl_dir.mkdir()
    prepare(postgres_dsn, shared_state, [], scheduler_interval_seconds=INTERVAL, crl_validity_hours=1,
            crl_path=str(crl_dir / "capf.crl"))
    key = ec.generate_private_key(ec.SECP256R1())
    store = open_store(postgres_dsn, state_dir=shared_state, actor="test")
    cli = ["--store", postgres_dsn, "--state-dir", shared_state]
    first = {name: _issue(store, name, key) for name in NAMES}
    http_port = _free_port()
    cluster = Cluster(postgres_dsn, shared_state, str(tmp_path), count=2)
    try:
        cluster.nodes[1].start("--enrolment-interval", "0")  # a host without the HTTP responder
        with store.transaction() as tx:
            service_records.write(tx, "test", {"crl_http_address": "127.0.0.1", "crl_http_port": http_port})
        cluster.nodes[0].start("--enrolment-interval", "0", "--processes", "2")
        party = _RelyingParty(store, http_port, tmp_path)
        original = authority.current(store)["fingerprint"]
        assert wait_for(lambda: _served(party, original), 30), cluster.logs()
        took = []

        run_cli(*cli, "phone", "revoke", NAMES[0], "--reason", "key_compromise", check=True)
        took.append(party.lists_within_bound(first[NAMES[0]].serial, original, time.monotonic()))

        run_cli(*cli, "ca", "regenerate", "--key-type", "ec256", check=True)
        active = authority.current(store)["fingerprint"]
        second = _issue(store, NAMES[1], key)  # under the new CAPF certificate; supersedes the first one
        took.append(party.lists_within_bound(first[NAMES[1]].serial, original, time.monotonic()))
        run_cli(*cli, "phone", "revoke", NAMES[1], "--reason", "privilege_withdrawn", "--serial", second.serial,
                check=True)
        took.append(party.lists_within_bound(second.serial, active, time.monotonic()))
        assert second.serial in party.fetch(None)  # /capf.crl follows the active CAPF certificate

        phone_config.converge(store, NAMES[2], state="absent")  # its LSC is revoked and stays listed
        took.append(party.lists_within_bound(first[NAMES[2]].serial, original, time.monotonic()))
        print(f"seconds from a revocation's commit to its CRL over HTTP: {[round(each, 2) for each in took]}")

        time.sleep(2 * INTERVAL)  # more ticks of every process: nothing changes what was listed
        revoked = {first[NAMES[0]].serial, first[NAMES[1]].serial, first[NAMES[2]].serial}
        assert party.fetch(original) == revoked and party.fetch(active) == {second.serial}
        for fingerprint in (original, active):  # the files of every node: the same CRLs
            location = crl_module.issuer_location(str(crl_dir / "capf.crl"), fingerprint)
            assert wait_for(lambda path=location, fp=fingerprint: _file_matches(party, path, fp), 10)

        # A relying party with both CRLs refuses exactly the revoked LSCs.
        history = {row["fingerprint"]: row["pem"] for row in authority.history(store)}
        bundle = tmp_path / "capf-both.pem"
        bundle.write_text(history[original] + history[active])
        crls = tmp_path / "crls.pem"
        crls.write_text("".join(crl_module.to_pem(party.bodies[party.numbers[fp]]) for fp in (original, active)))
        for issued in [*first.values(), second]:
            lsc_pem = tmp_path / f"{issued.serial}.pem"
            lsc_pem.write_text(issued.pem)
            result = openssl("verify", "-crl_check", "-CAfile", str(bundle), "-CRLfile", str(crls), str(lsc_pem),
                             check=False)
            output = (result.stdout + result.stderr).decode()
            if issued.serial in revoked | {second.serial}:
                assert result.returncode != 0 and "certificate revoked" in output, output
            else:
                assert result.returncode == 0, output
        assert cluster.stop() == [0, 0]
    finally:
        cluster.stop()
        store.close()
    assert "Traceback" not in cluster.logs()


def _served(party: _RelyingParty, fingerprint: str) -> bool:
    try:
        party.fetch(fingerprint)
        return True
    except OSError:  # 404 (no CRL signed yet) or the responder not up yet
        return False


def _file_matches(party: _RelyingParty, path: str, fingerprint: str) -> bool:
    if not os.path.exists(path):
        return False
    with open(path, "rb") as handle:
        return handle.read() == party.bodies[party.numbers[fingerprint]]
