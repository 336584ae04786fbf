"""An LSC never outlives the CAPF certificate that signs it, nor starts before it.

Invariant, on both backends: for any CAPF certificate validity, any ``validity_days`` and any issuance
moment within the CAPF certificate's life, the LSC issued has notBefore = the issuance moment and
notAfter = min(issuance + validity_days, the signing CAPF certificate's notAfter), so never later than
the CAPF certificate's; the store, the result and the audit event say the notAfter the certificate
really carries, and whether it was cut (``validity_capped``). The issuance paths (``lsc.issue``, the
``issue`` command, a phone's session through the service's decider) all follow it, and a CAPF
certificate that has expired issues nothing.

And an LSC's validity lies within its signer's at the start too: a CAPF certificate that starts after
the issuance moment (an upload from a CA whose clock runs ahead, accepted up to ``CLOCK_SKEW``; a host
clock set back behind the certificate it made) signs LSCs that start with it, never before."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from support.capf_validity import PHONE_KEY, upload_capf
from support.protocol import add_phone, certificate_rows, openssl_verify
from support.sessions import SessionLeg
from support.tools import openssl, run_cli
from _opencapf.ca import authority, lsc
from _opencapf.ca import certificates as c
from _opencapf.errors import CertificateError
from _opencapf.simulator.identity import PhoneIdentity, PhoneSettings
from _opencapf.store import audit
from _opencapf.store import service as service_records
from _opencapf.vocabulary import format_utc, parse_utc

pytestmark = pytest.mark.both_backends

DAY = dt.timedelta(days=1)
SECOND = dt.timedelta(seconds=1)
EPOCH = parse_utc("2030-06-01T00:00:00Z", "epoch")


def _issued_event(store, serial: str) -> dict:
    with store.read() as tx:
        events = audit.events(tx, action="certificate.issued", limit=1000)
    (details,) = [event["details"] for event in events if event["details"]["serial"] == serial]
    return details


def _stored_dates(store, lsc_id: int) -> tuple[str, str]:
    with store.read() as tx:
        row = tx.one("SELECT not_before, not_after FROM certificates WHERE id = ?", (lsc_id,))
    return row["not_before"], row["not_after"]


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(capf_days=st.integers(1, 3650), validity_days=st.integers(1, 1825), offset=st.integers(0, 3650 * 86400))
@example(capf_days=1825, validity_days=1825, offset=365 * 86400)  # the defaults, a year into the CAPF certificate
@example(capf_days=1825, validity_days=1825, offset=0)  # issued the second the CAPF certificate begins
@example(capf_days=30, validity_days=1, offset=29 * 86400 - 1)  # one second short of being cut
@example(capf_days=30, validity_days=1, offset=29 * 86400)  # ends exactly with the CAPF certificate: not cut
@example(capf_days=30, validity_days=1, offset=29 * 86400 + 1)  # cut by one second
@example(capf_days=30, validity_days=1, offset=30 * 86400 - 1)  # the CAPF certificate's last second but one
def test_an_lsc_ends_no_later_than_its_capf_certificate(ca_store, capf_days, validity_days, offset):
    capf = upload_capf(ca_store, EPOCH, capf_days)
    capf_end = c.not_after(capf)
    moment = EPOCH + dt.timedelta(seconds=offset % int((capf_end - EPOCH).total_seconds()))
    issued = lsc.issue(ca_store, "SEP00000000C001", PHONE_KEY.public_key(), validity_days=validity_days, now=moment)

    certificate = c.load_pem_certificate(issued.pem)
    wanted_end = min(moment + validity_days * DAY, capf_end)
    capped = moment + validity_days * DAY > capf_end
    assert c.not_before(certificate) == moment
    assert c.not_after(certificate) == wanted_end <= capf_end
    assert c.signed_by(certificate, capf)
    # What the store, the result and the audit say is what the certificate carries.
    assert _stored_dates(ca_store, issued.id) == (format_utc(moment), format_utc(c.not_after(certificate)))
    assert issued.not_after == format_utc(c.not_after(certificate))
    assert issued.validity_capped is capped
    details = _issued_event(ca_store, issued.serial)
    if capped:
        assert details["validity_capped"] is True
        assert details["not_after"] == issued.not_after and details["validity_days"] == validity_days
    else:
        assert "validity_capped" not in details


def test_the_issue_command_cuts_the_default_validity_to_the_capf_certificate(ca_store, store_cli, tmp_path):
    """The defaults (both 1825 days), the CAPF certificate made a year ago: the LSC ends with it, which
    ``openssl x509`` reads from the certificate, and ``openssl verify`` takes it for a valid chain."""
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    capf = upload_capf(ca_store, now - 365 * DAY, 1825)
    key_file = tmp_path / "phone.der"
    key_file.write_bytes(c.public_key_der(PHONE_KEY.public_key()))
    done = run_cli(*store_cli, "--json", "issue", "SEP00000000C002", str(key_file), check=True)
    result = json.loads(done.stdout)
    assert result["validity_capped"] is True
    assert result["not_after"] == format_utc(c.not_after(capf))
    assert "shortened to the CAPF certificate's expiry" in done.stderr

    lsc_file = tmp_path / "lsc.pem"
    lsc_file.write_text(result["pem"])
    shown = openssl("x509", "-in", str(lsc_file), "-noout", "-enddate").stdout.decode().strip()
    capf_file = tmp_path / "capf.pem"
    capf_file.write_text(c.to_pem(capf))
    capf_shown = openssl("x509", "-in", str(capf_file), "-noout", "-enddate").stdout.decode().strip()
    assert shown == capf_shown  # notAfter=... the same second
    assert openssl_verify(c.to_pem(capf), result["pem"], tmp_path).returncode == 0
    (row,) = certificate_rows(ca_store, "SEP00000000C002")
    assert row["not_after"] == result["not_after"]


@settings(max_examples=15, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(behind=st.integers(1, 6 * 3600), validity_days=st.integers(1, 1825), capf_days=st.integers(1, 3650))
@example(behind=1, validity_days=1825, capf_days=1825)  # a second before the CAPF certificate starts
@example(behind=299, validity_days=30, capf_days=30)  # within the clock skew an upload accepts; ends with it
def test_an_lsc_starts_no_earlier_than_its_capf_certificate(ca_store, behind, validity_days, capf_days):
    capf = upload_capf(ca_store, EPOCH, capf_days)
    moment = EPOCH - behind * SECOND
    issued = lsc.issue(ca_store, "SEP00000000C007", PHONE_KEY.public_key(), validity_days=validity_days, now=moment)

    certificate = c.load_pem_certificate(issued.pem)
    assert c.not_before(certificate) == c.not_before(capf), "it starts with its signer, not before"
    assert c.not_after(certificate) == min(EPOCH + validity_days * DAY, c.not_after(capf))
    assert _stored_dates(ca_store, issued.id) == (format_utc(EPOCH), issued.not_after)
    assert issued.not_after == format_utc(c.not_after(certificate))
    with ca_store.read() as tx:  # issued when it was, not when it starts
        assert tx.scalar("SELECT issued_at FROM certificates WHERE id = ?", (issued.id,)) == format_utc(moment)


def test_a_session_right_after_an_upload_that_starts_ahead_gets_an_lsc_that_starts_with_it(ca_store):
    """The service's path: a CAPF certificate from a CA whose clock runs three minutes ahead is uploaded
    (within ``CLOCK_SKEW``: accepted) and a phone enrols at once: its LSC starts with the CAPF certificate."""
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    capf = upload_capf(ca_store, now + 180 * SECOND, 1825, uploaded_at=now)
    leg = _enrol(ca_store, "SEP00000000C008", 9)
    assert leg.server.outcome.outcome == "succeeded"
    assert c.not_before(leg.certificate) == c.not_before(capf)
    (row,) = certificate_rows(ca_store, "SEP00000000C008")
    assert row["not_before"] == format_utc(c.not_before(capf))


def _enrol(store, name: str, session: int) -> SessionLeg:
    """A phone's install session, run to its end through the service's decider."""
    add_phone(store, name, operation="install_upgrade", key_order="ec")
    leg = SessionLeg(store, PhoneIdentity(PhoneSettings(name)), session, signer=authority.signer(store))
    moment = 0.0
    while not leg.done:
        moment += 0.01
        leg.step(moment)
    return leg


def test_a_session_cuts_the_lsc_to_the_capf_certificate_it_signs_with(ca_store):
    """The service's path: a phone's session signs with the CAPF certificate active when it connected."""
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    capf = upload_capf(ca_store, now - 365 * DAY, 1825)
    with ca_store.transaction() as tx:
        service_records.write(tx, "test", {"validity_days": 1825})
    name = "SEP00000000C003"
    leg = _enrol(ca_store, name, 7)
    assert leg.server.outcome.outcome == "succeeded"
    assert c.not_after(leg.certificate) == c.not_after(capf)
    (row,) = certificate_rows(ca_store, name)
    assert row["status"] == "installed" and row["not_after"] == format_utc(c.not_after(capf))
    assert _issued_event(ca_store, row["serial"])["validity_capped"] is True


def test_an_expired_capf_certificate_issues_nothing(ca_store, store_cli, tmp_path):
    """Not at its notAfter second (the LSC would be valid for no time) nor after it; nothing is recorded."""
    capf = upload_capf(ca_store, EPOCH, 30)
    end = c.not_after(capf)
    for moment in (end, end + SECOND, end + 400 * DAY):
        with pytest.raises(CertificateError, match="expired at .* cannot issue"):
            lsc.issue(ca_store, "SEP00000000C004", PHONE_KEY.public_key(), now=moment)
    issued = lsc.issue(ca_store, "SEP00000000C004", PHONE_KEY.public_key(), now=end - SECOND)
    assert issued.not_after == format_utc(end) and issued.validity_capped is True
    assert len(certificate_rows(ca_store, "SEP00000000C004")) == 1

    upload_capf(ca_store, dt.datetime.now(dt.timezone.utc).replace(microsecond=0) - 40 * DAY, 30)
    key_file = tmp_path / "phone.der"
    key_file.write_bytes(c.public_key_der(PHONE_KEY.public_key()))
    done = run_cli(*store_cli, "issue", "SEP00000000C004", str(key_file))
    assert done.returncode != 0 and "expired at" in done.stderr
    assert len(certificate_rows(ca_store, "SEP00000000C004")) == 1


def test_a_session_with_an_expired_capf_certificate_issues_nothing(ca_store):
    """The service's path: the session fails with the reason, and the store records no LSC."""
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    upload_capf(ca_store, now - 40 * DAY, 30)
    name = "SEP00000000C006"
    leg = _enrol(ca_store, name, 8)
    assert leg.certificate is None and leg.server.outcome.outcome == "failed"
    assert "expired at" in leg.server.outcome.reason
    assert certificate_rows(ca_store, name) == []
