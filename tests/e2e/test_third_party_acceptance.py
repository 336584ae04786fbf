"""Every certificate any issuer returns is checked against what we asked for before anyone sees it.

One property over issuer kind \u00d7 defect kind: the online CAs in the session (EST, Microsoft AD CS),
a pending AD CS request picked up by the enrolment service, and the offline CA (CSR export, signed
by an independent openssl CA, ``opencapf csr import``). Whatever the defect, the certificate is
refused with its code recorded (the CSR, the phone's operation, a ``certificate.refused`` audit
event), no X-CSR/1 simulator phone receives it, and no certificate row is recorded for it.

Every case with an SQLite store; with a PostgreSQL store too, one defect per way a certificate comes
in (in the session, picked up by the enrolment service, imported), a correct imported certificate, and
the checks at delivery (chain through the CA it came with; CA removed from CAPF-trust). Correct
certificates from the online CAs on PostgreSQL: test_third_party_ca.py.
"""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest
from cryptography.x509.oid import NameOID

from support.phones import phone, run_enrol
from support.protocol import add_phone, certificate_rows, phone_row
from support.stores import backend_cases
from support.third_party_ca import (DEFECTS, OTHER_DEVICE, PASSWORD, USERNAME, AdcsServer, EnterprisePki, EstServer,
                                    key_pem, pem)
from support.tools import openssl, run_cli
from _opencapf import enrolment, revocation, service_config, trust
from _opencapf.issuers import acceptance
from _opencapf.protocol.constants import XCAPS_ALL
from _opencapf.protocol.phone import PhoneBehaviour
from _opencapf.store import audit
from _opencapf.vocabulary import CERTIFICATE_REFUSALS

X_CSR = PhoneBehaviour(x_caps=XCAPS_ALL)
NAME = "SEP0A0B0C0D0E80"
ISSUERS = ("est", "microsoft", "microsoft_pending", "offline")

# The openssl extension sections the offline CA operator signs with, per defect.
OPENSSL_EXTENSIONS = """[lsc]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth, clientAuth, 1.3.6.1.5.5.7.3.5
[wrong_subject_alt_name]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
subjectAltName = DNS:{other}
[is_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, digitalSignature, keyEncipherment
[missing_key_usage]
basicConstraints = critical, CA:FALSE
extendedKeyUsage = clientAuth
"""
OPENSSL_CA_CONFIG = """[ca]
default_ca = operator
[operator]
database = {directory}/index.txt
new_certs_dir = {directory}
serial = {directory}/serial
default_md = sha256
policy = anything
unique_subject = no
copy_extensions = none
[anything]
commonName = supplied
organizationName = optional
countryName = optional
"""


def test_the_defects_are_the_refusal_codes():
    assert set(DEFECTS) <= set(CERTIFICATE_REFUSALS)


@pytest.fixture(scope="module")
def pki():
    return EnterprisePki("Acceptance")


def _trust(store, pki):
    trust.converge(store, content=pem(pki.root) + pem(pki.issuing), trust_store=["capf-trust", "callmanager-trust"])


def _configure_online(store, ca_type, port):
    settings = {"hostname": "localhost", "port": port, "type": ca_type, "username": USERNAME, "password": PASSWORD}
    if ca_type == "microsoft":
        settings["template"] = "PhoneLSC"
    service_config.converge(store, parameters_wanted={"issuer": "online_ca"}, online_ca=settings)


class OpensslOperator:
    """An offline CA operator with the openssl command line: ``x509 -req`` for most answers, ``ca``
    for certificates outside their validity, a CA of its own for the untrusted chain."""

    def __init__(self, pki, directory):
        self.directory = directory
        directory.mkdir()
        self.ca = directory / "issuing.pem"
        self.ca_key = directory / "issuing.key"
        self.ca.write_text(pem(pki.issuing))
        self.ca_key.write_bytes(key_pem(pki.issuing_key))
        self.extensions = directory / "lsc.cnf"
        self.extensions.write_text(OPENSSL_EXTENSIONS.format(other=OTHER_DEVICE))

    def sign(self, csr_path, defect):
        out = self.directory / f"{defect}.cer"
        if defect in ("not_yet_valid", "expired"):
            return self._ca_sign(csr_path, out, defect)
        ca, ca_key, extra = self.ca, self.ca_key, []
        section = defect if defect in ("wrong_subject_alt_name", "is_ca", "missing_key_usage") else "lsc"
        if defect == "wrong_subject":
            extra = ["-subj", f"/CN={OTHER_DEVICE}"]
        elif defect == "wrong_key":
            stranger = self.directory / "stranger.key"
            openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(stranger))
            openssl("pkey", "-in", str(stranger), "-pubout", "-out", str(self.directory / "stranger.pub"))
            extra = ["-force_pubkey", str(self.directory / "stranger.pub")]
        elif defect == "untrusted_chain":
            ca, ca_key = self.directory / "own-ca.pem", self.directory / "own-ca.key"
            openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
                    str(ca_key), "-subj", "/CN=Operator Own CA", "-days", "30", "-addext",
                    "basicConstraints=critical,CA:TRUE,pathlen:0", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                    "-out", str(ca))
        openssl("x509", "-req", "-in", str(csr_path), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
                "-days", "365", "-sha256", "-extfile", str(self.extensions), "-extensions", section, *extra,
                "-out", str(out))
        return out

    def _ca_sign(self, csr_path, out, defect):
        dates = {"not_yet_valid": ("20990101000000Z", "21000101000000Z"),
                 "expired": ("20200101000000Z", "20210101000000Z")}[defect]
        return self.sign_between(csr_path, out, *dates)

    def sign_between(self, csr_path, out, start: str, end: str):
        """A correct LSC valid from ``start`` to ``end`` (openssl ``ca`` dates, YYYYMMDDHHMMSSZ)."""
        (self.directory / "index.txt").write_text("")
        (self.directory / "serial").write_text("1000\n")
        config = self.directory / "ca.cnf"
        config.write_text(OPENSSL_CA_CONFIG.format(directory=self.directory))
        openssl("ca", "-batch", "-config", str(config), "-cert", str(self.ca), "-keyfile", str(self.ca_key), "-in",
                str(csr_path), "-startdate", start, "-enddate", end, "-extfile", str(self.extensions),
                "-extensions", "lsc", "-notext", "-out", str(out))
        return out


def _enrol_through(kind, defect, capf_server, store, store_cli, pki, tmp_path):
    """An X-CSR/1 phone's Install/Upgrade through issuer ``kind``, whose CA answers with ``defect``
    (None: a correct certificate). Returns the phone, the last session's result and what the
    step that received the certificate said: the recorded phone reason, or the import report."""
    add_phone(store, NAME, operation="install_upgrade", auth_mode="null_string", key_order="rsa")
    _trust(store, pki)
    identity = phone(tmp_path, NAME)
    if kind in ("est", "microsoft"):
        server_class = EstServer if kind == "est" else AdcsServer
        with server_class(pki, str(tmp_path / kind)) as server:
            server.defect = defect
            _configure_online(store, kind, server.port)
            result = run_enrol(identity, capf_server, behaviour=X_CSR)
        return identity, result, phone_row(store, NAME)["operation_reason"]
    if kind == "microsoft_pending":
        with AdcsServer(pki, str(tmp_path / "adcs"), mode="pending") as adcs:
            adcs.defect = defect
            _configure_online(store, "microsoft", adcs.port)
            assert run_enrol(identity, capf_server, behaviour=X_CSR).outcome == "retry_later"
            adcs.issue(41)  # the CA manager approves; the enrolment service picks the certificate up
            counts = enrolment.worker_step(store)
            assert counts == {"issued": int(defect is None), "pending": 0, "failed": int(defect is not None)}
            said = phone_row(store, NAME)["operation_reason"]
            return identity, run_enrol(identity, capf_server, behaviour=X_CSR), said
    service_config.converge(store, parameters_wanted={"issuer": "offline_ca"})
    assert run_enrol(identity, capf_server, behaviour=X_CSR).outcome == "retry_later"
    out = tmp_path / "out"
    out.mkdir()
    enrolment.export_csrs(store, str(out))
    signed = OpensslOperator(pki, tmp_path / "operator").sign(out / f"{NAME}.csr.pem", defect)
    imported = run_cli(*store_cli, "--json", "csr", "import", str(signed))
    assert imported.returncode == (0 if defect is None else 1), imported.stderr
    report = json.loads(imported.stdout)
    report["phone_reason"] = phone_row(store, NAME)["operation_reason"]
    return identity, run_enrol(identity, capf_server, behaviour=X_CSR), report


@pytest.mark.parametrize("backend, kind, defect", backend_cases(
    [(kind, defect) for kind in ISSUERS for defect in DEFECTS],
    [("est", "wrong_key"), ("microsoft_pending", "is_ca"), ("offline", "untrusted_chain")]), indirect=["backend"])
def test_a_defective_certificate_is_refused_and_never_delivered(capf_server, ca_store, store_cli, pki, tmp_path,
                                                                kind, defect):
    identity, result, said = _enrol_through(kind, defect, capf_server, ca_store, store_cli, pki, tmp_path)
    if kind == "offline":
        assert said["matched"] == [] and [item["code"] for item in said["problems"]] == [defect], said
        said = said["phone_reason"]
        assert result.outcome == "retry_later", result  # the phone hears "later" again: nothing delivered
    elif kind == "microsoft_pending":
        assert result.outcome != "ok", result  # the next session starts over with a new key
    else:
        assert (result.outcome, result.end_reason) == ("failed", 7), result
    assert f"[{defect}]" in said, said
    assert_refused(ca_store, identity, defect, pending=kind == "offline")


@pytest.mark.parametrize("backend, kind", backend_cases(ISSUERS, ["offline"]),
                         indirect=["backend"])
def test_a_correct_certificate_is_delivered(capf_server, ca_store, store_cli, pki, tmp_path, kind):
    """The other side of the property: the same flows deliver a certificate without defect."""
    identity, result, _said = _enrol_through(kind, None, capf_server, ca_store, store_cli, pki, tmp_path)
    assert (result.outcome, result.end_reason) == ("ok", 1), result
    [row] = certificate_rows(ca_store, NAME)
    assert row["status"] == "installed" and identity.lsc is not None
    assert identity.lsc.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == NAME


def assert_refused(store, identity, code, *, pending):
    """Refused with ``code`` on the CSR and in the audit log; nothing recorded, nothing delivered."""
    tag = f"[{code}]"
    assert identity.lsc is None
    assert certificate_rows(store, NAME) == []  # not installed, not issued, not current: not recorded at all
    with store.read() as tx:
        csr = tx.one("SELECT status, reason FROM csrs ORDER BY id LIMIT 1")
        refused = audit.events(tx, action="certificate.refused", subject=NAME)
    assert tag in csr["reason"], csr["reason"]
    assert csr["status"] == ("pending" if pending else "failed")
    assert [event["details"]["code"] for event in refused] == [code]


# -- at delivery: a certificate waiting for the phone's next session is checked again then ---------------

OPENSSL_DATE = "%Y%m%d%H%M%SZ"


def _imported_and_waiting(store, store_cli, capf_server, pki, tmp_path, *, trusted, expires_in=None):
    """An offline flow up to a valid certificate imported and waiting for the phone's next session;
    CAPF-trust holds ``trusted``; the certificate file carries the issuing CA along."""
    add_phone(store, NAME, operation="install_upgrade", auth_mode="null_string", key_order="rsa")
    trust.converge(store, content="".join(pem(item) for item in trusted), trust_store=["capf-trust"])
    service_config.converge(store, parameters_wanted={"issuer": "offline_ca"})
    identity = phone(tmp_path, NAME)
    assert run_enrol(identity, capf_server, behaviour=X_CSR).outcome == "retry_later"
    out = tmp_path / "out"
    out.mkdir()
    enrolment.export_csrs(store, str(out))
    operator = OpensslOperator(pki, tmp_path / "operator")
    if expires_in is None:
        signed = operator.sign(out / f"{NAME}.csr.pem", "none")
    else:
        now = dt.datetime.now(dt.timezone.utc)
        signed = operator.sign_between(out / f"{NAME}.csr.pem", tmp_path / "operator" / "short.cer",
                                       (now - dt.timedelta(hours=1)).strftime(OPENSSL_DATE),
                                       (now + dt.timedelta(seconds=expires_in)).strftime(OPENSSL_DATE))
    bundle = tmp_path / "signed-with-chain.pem"
    bundle.write_text(signed.read_text() + pem(pki.issuing))
    imported = run_cli(*store_cli, "--json", "csr", "import", str(bundle))
    assert imported.returncode == 0 and json.loads(imported.stdout)["matched"] == [NAME], imported.stdout
    [row] = certificate_rows(store, NAME)
    assert row["status"] == "issued"
    return identity


def assert_refused_at_delivery(store, identity, result, code):
    """Not given to the phone; the certificate, its CSR, the operation and the audit log say why."""
    tag = f"[{code}]"
    assert (result.outcome, result.end_reason) == ("failed", 7), result
    assert identity.lsc is None
    [row] = certificate_rows(store, NAME)
    assert row["status"] == "stale" and row["installed_at"] is None
    with store.read() as tx:
        csr = tx.one("SELECT status, reason FROM csrs ORDER BY id LIMIT 1")
        refused = audit.events(tx, action="certificate.refused", subject=NAME)
        stale = audit.events(tx, action="certificate.stale", subject=NAME)
    assert csr["status"] == "failed" and tag in csr["reason"] and "refused at delivery" in csr["reason"], csr
    assert [event["details"]["code"] for event in refused] == [code]
    assert [event["details"]["code"] for event in stale] == [code]
    operation = phone_row(store, NAME)
    assert (operation["operation_status"], operation["operation_reason"]) == ("failed", csr["reason"])


def test_a_waiting_certificate_that_expired_before_delivery_is_refused_and_never_delivered(
        capf_server, ca_store, store_cli, pki, tmp_path):
    identity = _imported_and_waiting(ca_store, store_cli, capf_server, pki, tmp_path,
                                     trusted=(pki.root, pki.issuing), expires_in=15)
    # Valid when imported (with room for a loaded machine); expired by the phone's next session.
    [row] = certificate_rows(ca_store, NAME)
    not_after = dt.datetime.fromisoformat(row["not_after"].replace("Z", "+00:00"))
    time.sleep(max(0.0, (not_after - dt.datetime.now(dt.timezone.utc)).total_seconds() + 1.5))
    result = run_enrol(identity, capf_server, behaviour=X_CSR)
    assert_refused_at_delivery(ca_store, identity, result, "expired")
    # The next session starts over with a new key, whose CSR waits for the CA again.
    assert run_enrol(identity, capf_server, behaviour=X_CSR).outcome == "retry_later"
    with ca_store.read() as tx:
        assert [row["status"] for row in tx.query("SELECT status FROM csrs ORDER BY id")] == ["failed", "pending"]


@pytest.mark.both_backends
def test_a_waiting_certificate_whose_ca_left_capf_trust_is_refused_and_never_delivered(
        capf_server, ca_store, store_cli, pki, tmp_path):
    identity = _imported_and_waiting(ca_store, store_cli, capf_server, pki, tmp_path, trusted=(pki.root,))
    trust.converge(ca_store, state="absent", trust_store=["capf-trust"], content=pem(pki.root))
    result = run_enrol(identity, capf_server, behaviour=X_CSR)
    assert_refused_at_delivery(ca_store, identity, result, "untrusted_chain")


@pytest.mark.both_backends
def test_a_waiting_certificate_revoked_while_its_delivery_is_checked_stays_revoked(
        capf_server, ca_store, store_cli, pki, tmp_path, monkeypatch):
    """A revocation is final: the operator revokes the waiting certificate while the phone's session
    checks it at delivery, and the check refuses it (its CA left CAPF-trust). The certificate stays
    ``revoked`` (not made ``stale`` over the revocation), and nothing is delivered."""
    identity = _imported_and_waiting(ca_store, store_cli, capf_server, pki, tmp_path, trusted=(pki.root,))
    trust.converge(ca_store, state="absent", trust_store=["capf-trust"], content=pem(pki.root))
    [waiting] = certificate_rows(ca_store, NAME)
    check = acceptance.check

    def revoked_meanwhile(*args, **kwargs):
        revocation.revoke_lsc(ca_store, NAME, "key_compromise", serial=waiting["serial"])
        return check(*args, **kwargs)

    monkeypatch.setattr(acceptance, "check", revoked_meanwhile)
    result = run_enrol(identity, capf_server, behaviour=X_CSR)
    assert (result.outcome, result.end_reason) == ("failed", 7), result
    assert identity.lsc is None
    [row] = certificate_rows(ca_store, NAME)
    assert (row["status"], row["installed_at"]) == ("revoked", None)
    with ca_store.read() as tx:
        assert audit.events(tx, action="certificate.stale", subject=NAME) == []
        assert [event["details"]["code"] for event in audit.events(tx, action="certificate.refused",
                                                                   subject=NAME)] == ["untrusted_chain"]


@pytest.mark.both_backends
def test_a_waiting_certificate_that_chains_through_the_ca_it_came_with_is_delivered(
        capf_server, ca_store, store_cli, pki, tmp_path):
    """CAPF-trust holds only the root (Table 1): the check at delivery uses the issuing CA that came
    with the certificate, as the import did."""
    identity = _imported_and_waiting(ca_store, store_cli, capf_server, pki, tmp_path, trusted=(pki.root,))
    result = run_enrol(identity, capf_server, behaviour=X_CSR)
    assert (result.outcome, result.end_reason) == ("ok", 1), result
    [row] = certificate_rows(ca_store, NAME)
    assert row["status"] == "installed" and identity.lsc is not None
