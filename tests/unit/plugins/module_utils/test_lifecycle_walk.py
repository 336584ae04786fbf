"""One LSC walked by the service's own scheduler through its whole life (the clock given to
``Scheduling``): expiry warnings at 30, 7 and 1 days and at expiry, each mailed once to a real SMTP
relay; then revocation after expiry; then the CRL that says so, issued beyond its validity (the
newest CRL then leaves it out, RFC 5280 3.3), checked by ``openssl`` and pkilint, which makes
``openssl verify -crl_check`` refuse the LSC."""

from __future__ import annotations

import csv
import datetime as dt
import io

from _opencapf import service_config
from _opencapf.ca import authority, lsc
from _opencapf.ca import crl as crl_module
from _opencapf.dependencies import x509
from _opencapf.server.scheduling import Scheduling
from _opencapf.store import certificates as certificate_records
from _opencapf.store import service as service_records
from _opencapf.vocabulary import utc_now
from support.crl_http import active_crl
from support.smtp import PASSWORD, SmtpRelay
from support.tools import openssl

from test_revocation import _crl_lint_errors  # pylint: disable=import-error

DEVICE = "SEP00000000CAFE"


def _rows(message) -> list[dict]:
    (attachment,) = message.iter_attachments()
    return list(csv.DictReader(io.StringIO(attachment.get_content())))


def test_an_lsc_is_warned_at_each_threshold_then_revoked_and_listed_on_the_crl(ca_store, rsa_phone_key, tmp_path):
    relay = SmtpRelay(tmp_path)
    try:
        service_config.converge(ca_store, parameters_wanted=dict(relay.settings(), monitor_interval_hours=12),
                                monitor_smtp_password=PASSWORD)
        with ca_store.transaction() as tx:
            service_records.write(tx, "test", {"crl_validity_hours": 24})
        issued = lsc.issue(ca_store, DEVICE, rsa_phone_key.public_key(), source="capf", validity_days=40)
        with ca_store.transaction() as tx:
            certificate_records.install(tx, "test", tx.one("SELECT * FROM phones WHERE name = ?", (DEVICE,)),
                                        issued.id)
        expiry = x509.load_pem_x509_certificate(issued.pem.encode()).not_valid_after_utc

        warned: list[tuple[int, int]] = []  # (threshold, whole days left when mailed)
        moment = utc_now().replace(microsecond=0)
        while moment <= expiry + dt.timedelta(days=2):
            mailed = len(relay.messages)
            scheduling = Scheduling(ca_store, clock=lambda at=moment: at)
            try:
                scheduling.tick()
            finally:
                scheduling.close()
            for sent in relay.messages[mailed:]:
                warned += [(int(row["threshold"]), int(row["days_left"])) for row in _rows(sent["message"])
                           if row["device_name"] == DEVICE]
            with ca_store.read() as tx:
                revoked = certificate_records.revoked_lscs(tx)
            # Invariant at every step: the LSC is revoked exactly when it has expired.
            assert bool(revoked) is (moment > expiry), (moment, expiry, revoked)
            moment += dt.timedelta(hours=12)
    finally:
        relay.stop()

    # Each threshold mailed once, at the first check at or past it, and once more at expiry.
    assert [threshold for threshold, _days in warned] == [30, 7, 1, 0], warned
    assert all(days <= threshold for threshold, days in warned), warned
    assert [(row["device_name"], row["revocation_reason"]) for row in revoked] == [
        (DEVICE, "cessation_of_operation")]

    # The CRLs list it until one issued after its notAfter and its revocation has (RFC 5280 3.3): the
    # newest leaves it out, the last that lists it is that one.
    newest = x509.load_der_x509_crl(active_crl(ca_store)["der"])
    assert newest.get_revoked_certificate_by_serial_number(int(issued.serial, 16)) is None
    with ca_store.read() as tx:
        ders = [bytes(row["der"]) for row in tx.query("SELECT der FROM crls ORDER BY number")]
    listing = [der for der in ders
               if x509.load_der_x509_crl(der).get_revoked_certificate_by_serial_number(int(issued.serial, 16))]
    der = listing[-1]
    crl = x509.load_der_x509_crl(der)
    entry = crl.get_revoked_certificate_by_serial_number(int(issued.serial, 16))
    assert entry is not None and crl.last_update_utc > max(expiry, entry.revocation_date_utc)
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == \
        x509.ReasonFlags.cessation_of_operation
    assert _crl_lint_errors(der) == []
    capf_pem, crl_pem, lsc_pem = tmp_path / "capf.pem", tmp_path / "capf-crl.pem", tmp_path / "lsc.pem"
    capf_pem.write_text(authority.current(ca_store)["pem"])
    crl_pem.write_text(crl_module.to_pem(der))
    lsc_pem.write_text(issued.pem)
    verified = openssl("crl", "-in", str(crl_pem), "-CAfile", str(capf_pem), "-noout")
    assert b"verify OK" in verified.stdout + verified.stderr
    at = str(int(crl.last_update_utc.timestamp()) + 60)
    refused = openssl("verify", "-attime", at, "-crl_check", "-CAfile", str(capf_pem), "-CRLfile", str(crl_pem),
                      str(lsc_pem), check=False)
    assert refused.returncode != 0 and b"certificate revoked" in refused.stdout + refused.stderr
