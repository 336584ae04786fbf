"""The certificate monitor against a real SMTP relay on loopback (aiosmtpd, STARTTLS or implicit TLS, AUTH):
one mail per check with the right devices and CSV, each warning once per certificate and threshold, a clock
walked through the thresholds, and relay failures retried, recorded and never raised."""

from __future__ import annotations

import csv
import datetime as dt
import io
import logging
import os
import secrets

import pytest

from support import pki
from support.declarations import installed_lsc
from support.smtp import PASSWORD, UNANSWERED, USER, SmtpRelay, free_port
from _opencapf import monitor, reports, secretbox, service_config
from _opencapf.ca import authority
from _opencapf.cli.main import main as cli_main
from _opencapf.errors import ValidationError
from _opencapf.server.scheduling import Scheduling
from _opencapf.store import trust
from _opencapf.store import monitor as records
from _opencapf.vocabulary import format_utc, utc_now

NOW = dt.datetime(2026, 12, 1, 8, 0, tzinfo=dt.timezone.utc)


@pytest.fixture
def relay(tmp_path):
    running = SmtpRelay(tmp_path)
    yield running
    running.stop()


def _configure(store, relay, **extra):
    values = dict(relay.settings(), **extra)
    password = PASSWORD if values.get("monitor_smtp_username") else None
    return service_config.converge(store, parameters_wanted=values, monitor_smtp_password=password)


def _lsc(store, name, not_after, **settings):
    """A phone with an installed LSC that expires at ``not_after``; its fingerprint."""
    return installed_lsc(store, name, NOW - dt.timedelta(days=300), not_after, **settings)


def _trusted(store, common_name, not_after, trust_store="callmanager-trust"):
    certificate, _key = pki.make_cert(common_name)
    fingerprint = secrets.token_hex(32)
    with store.transaction() as tx:
        trust.add(tx, trust_store=trust_store, fingerprint=fingerprint, subject=f"CN={common_name}",
                  common_name=common_name, issuer=f"CN={common_name}", is_ca=True, not_after=format_utc(not_after),
                  description="", pem=pki.pem(certificate))
    return fingerprint


def _csv(message):
    attachments = list(message.iter_attachments())
    assert [part.get_filename() for part in attachments] == ["expiring-certificates.csv"]
    return list(csv.DictReader(io.StringIO(attachments[0].get_content())))


def _no_sleep(pauses):
    return pauses.append


def test_one_mail_over_starttls_and_login_names_the_devices_and_attaches_them_as_csv(store, relay):
    authority.ensure(store)
    _configure(store, relay)
    _lsc(store, "SEP0000000000A1", NOW + dt.timedelta(days=5, hours=2), model="CP-8865", device_pool="HQ",
         description="Reception")
    _lsc(store, "SEP0000000000A2", NOW + dt.timedelta(days=20))
    _lsc(store, "SEP0000000000A3", NOW + dt.timedelta(days=200))  # outside the warn window
    _trusted(store, "Partner Root", NOW + dt.timedelta(days=3), "capf-trust")

    result = monitor.check(store, NOW)
    assert (result["result"], result["found"], result["warnings"], result["mails_sent"], result["attempts"]) == (
        "sent", 3, 3, 1, 1)
    assert len(relay.messages) == 1
    sent = relay.messages[0]
    assert sent["tls"] and sent["login"] == USER and relay.logins == [(USER, True)]
    assert sent["from"] == "capf@example.com" and sent["to"] == ["voice-team@example.com", "pki@example.com"]
    message = sent["message"]
    assert message["Subject"] == ("CAPF certificate monitor: 3 certificates expiring or expired "
                                  "(soonest: Partner Root, 3 days left)")
    body = message.get_body().get_content()
    assert "phone LSCs: 2" in body and "CAPF-trust certificates: 1" in body
    assert body.index("Partner Root") < body.index("SEP0000000000A1") < body.index("SEP0000000000A2")
    rows = _csv(message)
    assert [(row["kind"], row["device_name"], row["days_left"], row["threshold"]) for row in rows] == [
        ("capf-trust", "", "3", "7"), ("lsc", "SEP0000000000A1", "5", "7"), ("lsc", "SEP0000000000A2", "20", "30")]
    assert (rows[1]["model"], rows[1]["device_pool"], rows[1]["description"]) == ("CP-8865", "HQ", "Reception")

    # The same check again, and a day later: every warning went out already.
    assert monitor.check(store, NOW)["result"] == "nothing_due"
    assert monitor.check(store, NOW + dt.timedelta(days=1))["result"] == "nothing_due"
    assert len(relay.messages) == 1


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")  # implicit TLS encrypts it all
@pytest.mark.parametrize("security", ["tls", "none"])
def test_implicit_tls_and_a_plain_relay_deliver_too(store, tmp_path, security):
    relay = SmtpRelay(tmp_path, security)
    try:
        authority.ensure(store)
        _configure(store, relay, monitor_smtp_port=relay.port)
        _lsc(store, "SEP0000000000B1", NOW + dt.timedelta(days=6))
        assert monitor.check(store, NOW)["result"] == "sent"
        assert len(relay.messages) == 1 and relay.messages[0]["tls"] is (security == "tls")
        assert relay.messages[0]["login"] == (USER if security == "tls" else None)
    finally:
        relay.stop()


def test_a_clock_walks_an_lsc_through_every_threshold_and_expiry_each_warned_once(store_on_both, relay):
    store = store_on_both
    _configure(store, relay)
    expiry = NOW + dt.timedelta(days=40)
    walked = _lsc(store, "SEP0000000000C1", expiry)
    late = _lsc(store, "SEP0000000000C2", NOW + dt.timedelta(days=42, hours=5))  # between two checks
    seen = []
    moment = NOW
    while moment <= expiry + dt.timedelta(days=3):
        before = len(relay.messages)
        monitor.check(store, moment, sleep=_no_sleep([]))
        for sent in relay.messages[before:]:
            for row in _csv(sent["message"]):
                seen.append((row["device_name"], int(row["threshold"]), moment))
        moment += dt.timedelta(hours=12)
    walked_thresholds = [(threshold, (expiry - at).days) for name, threshold, at in seen if name == "SEP0000000000C1"]
    # Each threshold once, at the first check at or past it; then once more when it has expired: at the
    # first check after its notAfter second (valid through that second, RFC 5280), half a day later.
    assert walked_thresholds == [(30, 30), (7, 7), (1, 1), (0, -1)]
    # Invariant over every mail: a certificate and threshold pair is never warned about twice.
    pairs = [(name, threshold) for name, threshold, _at in seen]
    assert len(pairs) == len(set(pairs))
    with store.read() as tx:
        assert records.warned(tx, [walked]) == {(walked, 30), (walked, 7), (walked, 1), (walked, 0)}
        assert (late, 30) in records.warned(tx, [late])
    # Checks that fall between thresholds warn at the first check past each one.
    assert [threshold for name, threshold, _at in seen if name == "SEP0000000000C2"] == [30, 7, 1, 0]


def test_a_certificate_first_seen_past_two_thresholds_is_warned_once_at_the_nearer(store, relay):
    _configure(store, relay)
    fingerprint = _lsc(store, "SEP0000000000D1", NOW + dt.timedelta(days=5))
    assert monitor.check(store, NOW)["certificates"][0]["threshold"] == 7
    assert monitor.check(store, NOW + dt.timedelta(days=1))["result"] == "nothing_due"
    with store.read() as tx:
        assert records.warned(tx, [fingerprint]) == {(fingerprint, 30), (fingerprint, 7)}
    assert len(relay.messages) == 1


def test_every_check_resends_what_is_within_the_window(store, relay):
    _configure(store, relay, monitor_resend="every_check")
    _lsc(store, "SEP0000000000E1", NOW + dt.timedelta(days=10))
    for day in range(3):
        assert monitor.check(store, NOW + dt.timedelta(days=day))["mails_sent"] == 1
    assert len(relay.messages) == 3


def test_a_relay_that_is_down_is_retried_with_back_off_recorded_and_tried_again_later(store, relay, caplog):
    _configure(store, relay, monitor_smtp_port=free_port())  # nothing listens there
    _lsc(store, "SEP0000000000F1", NOW + dt.timedelta(days=6))
    pauses = []
    with caplog.at_level(logging.WARNING, logger="opencapf.monitor"):
        failed = monitor.check(store, NOW, sleep=_no_sleep(pauses))
    assert (failed["result"], failed["attempts"], failed["mails_sent"]) == ("failed", 3, 0)
    assert failed["error"].startswith("ConnectionRefusedError") and pauses == [1.0, 2.0]
    assert caplog.text.count("failed (attempt") == 3
    with store.read() as tx:
        assert records.sent_warnings(tx) == []  # not sent, so not recorded: a later check sends it
        assert monitor.status(tx)["last_run"]["error"] == failed["error"]
        assert monitor.next_due(tx) == NOW + dt.timedelta(minutes=5)
    assert monitor.run_if_due(store, NOW + dt.timedelta(minutes=4), sleep=_no_sleep([])) is None
    assert monitor.run_if_due(store, NOW + dt.timedelta(minutes=5), sleep=_no_sleep([]))["result"] == "failed"
    with store.read() as tx:
        assert monitor.next_due(tx) == NOW + dt.timedelta(minutes=15)  # the pause doubles
    _configure(store, relay)  # the relay is back (at its real port)
    assert monitor.run_if_due(store, NOW + dt.timedelta(minutes=14)) is None
    sent = monitor.run_if_due(store, NOW + dt.timedelta(minutes=15))
    assert sent["result"] == "sent" and len(relay.messages) == 1
    with store.read() as tx:
        assert monitor.next_due(tx) == NOW + dt.timedelta(minutes=15, hours=24)
        assert monitor.status(tx)["last_success"] == format_utc(NOW + dt.timedelta(minutes=15))


def test_a_refused_login_is_recorded_and_the_password_appears_nowhere(store, tmp_path, caplog, store_path):
    relay = SmtpRelay(tmp_path, refuse_login=True)
    try:
        authority.ensure(store)
        converged = _configure(store, relay)
        assert converged["after"]["monitor_smtp_password"] == "(set)"
        _lsc(store, "SEP0000000000A9", NOW + dt.timedelta(days=2))
        with caplog.at_level(logging.DEBUG):
            result = monitor.check(store, NOW, sleep=_no_sleep([]))
    finally:
        relay.stop()
    assert result["result"] == "failed" and result["attempts"] == 3
    assert result["error"].startswith("SMTPAuthenticationError: 535")
    # smtplib tries each mechanism the relay offers (PLAIN, LOGIN) on each of the 3 attempts.
    assert relay.logins == [(USER, False)] * 6 and relay.messages == []
    gathered = reports.gather(store)
    assert gathered["monitor"]["last_run"]["result"] == "failed"
    assert gathered["service"]["monitor_smtp_password"] == "(set)"
    shown = repr(result) + repr(gathered) + repr(converged) + caplog.text
    assert PASSWORD not in shown
    for name in os.listdir(os.path.dirname(store_path)):  # sealed: not even the database file holds it
        path = os.path.join(os.path.dirname(store_path), name)
        if os.path.isfile(path):
            with open(path, "rb") as handle:
                assert PASSWORD.encode() not in handle.read(), name


def test_without_recipients_the_monitor_logs_and_warns_later_once_configured(store, relay, caplog):
    _lsc(store, "SEP0000000000AA", NOW + dt.timedelta(days=6))
    with caplog.at_level(logging.WARNING, logger="opencapf.monitor"):
        assert monitor.check(store, NOW)["result"] == "not_configured"
    assert "1 certificate(s) reached a warning threshold (soonest: phone LSC SEP0000000000AA, 6 days left)" in caplog.text
    _configure(store, relay)
    assert monitor.check(store, NOW)["result"] == "sent"


def test_expiring_certificates_cover_every_capf_certificate_and_both_trust_stores(store):
    retired = authority.ensure(store)[0]
    active = authority.regenerate(store)
    assert retired["fingerprint"] != active["fingerprint"]
    _trusted(store, "Old Root", NOW - dt.timedelta(days=2), "capf-trust")
    _trusted(store, "CM Root", NOW + dt.timedelta(days=25))
    _trusted(store, "Far Root", NOW + dt.timedelta(days=90))
    listed = monitor.expiring(store, NOW)
    assert [(item["kind"], item["subject"], item["threshold"]) for item in listed] == [
        ("capf-trust", "Old Root", 0), ("callmanager-trust", "CM Root", 30)]
    # Near the end of their life both CAPF certificates are listed (the retired one still signed LSCs that
    # phones hold); once expired, only the active one stays, as expired.
    end = dt.datetime.fromisoformat(retired["not_after"].replace("Z", "+00:00"))
    near = {item["fingerprint"] for item in monitor.expiring(store, end - dt.timedelta(days=1))
            if item["kind"] == "capf_certificate"}
    assert near == {retired["fingerprint"], active["fingerprint"]}
    after = [(item["fingerprint"], item["threshold"]) for item in monitor.expiring(store, end + dt.timedelta(days=1))
             if item["kind"] == "capf_certificate"]
    assert after == [(active["fingerprint"], 0)]


@pytest.mark.parametrize("values,password,message", [
    ({"monitor_recipients": ["ops@example.com"]}, None,
     "monitor_smtp_host is required when monitor_recipients names anyone to write to"),
    ({"monitor_recipients": ["ops@example.com"], "monitor_smtp_host": "smtp.example.com"}, None,
     "monitor_sender is required when monitor_recipients names anyone to write to"),
    ({"monitor_recipients": ["ops@example.com", "not an address"]}, None,
     "monitor_recipients[1] must be an e-mail address such as capf@example.com, got 'not an address'"),
    ({"monitor_warn_days": [30, 0]}, None, "monitor_warn_days[1] must be 1\u20133650 days, got 0"),
    ({"monitor_warn_days": [7, 7]}, None, "monitor_warn_days must not name a number of days twice, got [7, 7]"),
    ({"monitor_smtp_security": "ssl"}, None, "monitor_smtp_security must be one of starttls, tls, none, got 'ssl'"),
    ({"monitor_interval_hours": 0}, None, "monitor_interval_hours must be 1\u2013720 hours, got 0"),
    ({"monitor_smtp_host": "bad host!"}, None,
     "monitor_smtp_host must be a host name or an IP address of the SMTP relay, got 'bad host!'"),
    ({"monitor_smtp_ca_file": "relative.pem"}, None, "monitor_smtp_ca_file must be an absolute file path, got 'relative.pem'"),
    ({"monitor_smtp_username": "capf"}, None, "monitor_smtp_password is required with monitor_smtp_username"),
    ({"monitor_smtp_username": "capf", "monitor_smtp_security": "none"}, "x",
     "monitor_smtp_security must be starttls or tls with monitor_smtp_username (a password is never sent in clear), "
     "got 'none'"),
    ({}, "secret", "monitor_smtp_password needs monitor_smtp_username (the user it logs in as)"),
    ({"monitor_smtp_username": "capf"}, "", "monitor_smtp_password must be a non-empty string of at most 1024 characters"),
])
def test_settings_are_validated_once_with_the_option_path(store, values, password, message):
    with pytest.raises(ValidationError) as raised:
        service_config.converge(store, parameters_wanted=values, monitor_smtp_password=password)
    assert str(raised.value) == message
    with store.read() as tx:
        assert tx.scalar("SELECT COUNT(*) FROM service_parameters WHERE name LIKE 'monitor%'") == 0
        assert tx.scalar("SELECT COUNT(*) FROM secrets WHERE name = 'monitor.smtp_password'") == 0


def test_check_mode_writes_nothing_and_the_password_is_compared_not_shown(store, relay):
    authority.ensure(store)
    checked = service_config.converge(store, parameters_wanted=relay.settings(), monitor_smtp_password=PASSWORD,
                                      check_mode=True)
    assert checked["changed"] and checked["after"]["monitor_smtp_password"] == "(set)"
    with store.read() as tx:
        assert tx.scalar("SELECT COUNT(*) FROM service_parameters WHERE name LIKE 'monitor%'") == 0
        assert tx.scalar("SELECT COUNT(*) FROM secrets WHERE name = 'monitor.smtp_password'") == 0
    assert _configure(store, relay)["changed"]
    again = _configure(store, relay)
    assert not again["changed"] and again["after"]["monitor_smtp_password"] == "(set)"
    changed = service_config.converge(store, monitor_smtp_password="another-one", check_mode=True)
    assert changed["changed"] and changed["after"]["monitor_smtp_password"] == "(changed)"
    kept = service_config.converge(store, monitor_smtp_password="another-one", update_password="on_create")
    assert not kept["changed"]


def test_the_ca_file_is_read_where_it_is_set(store, tmp_path, relay):
    missing = str(tmp_path / "missing.pem")
    with pytest.raises(ValidationError) as raised:
        service_config.converge(store, parameters_wanted={"monitor_smtp_ca_file": missing})
    assert str(raised.value).startswith(f"monitor_smtp_ca_file: cannot read CA file {missing}")
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(ValidationError) as raised:
        service_config.converge(store, parameters_wanted={"monitor_smtp_ca_file": str(junk)})
    assert str(raised.value).startswith("monitor_smtp_ca_file must hold PEM CA certificates")
    assert service_config.converge(store, parameters_wanted={"monitor_smtp_ca_file": relay.ca_file})["changed"]


def test_names_from_certificates_cannot_add_header_lines(store, relay):
    _configure(store, relay)
    _trusted(store, "Evil Root\r\nBcc: thief@example.net", NOW + dt.timedelta(days=2))
    assert monitor.check(store, NOW)["result"] == "sent"
    message = relay.messages[0]["message"]
    assert message["Bcc"] is None and relay.messages[0]["to"] == ["voice-team@example.com", "pki@example.com"]
    assert message["Subject"].endswith("(soonest: Evil Root Bcc: thief@example.net, 2 days left)")


def test_a_password_this_secret_file_cannot_open_is_a_recorded_failure(store, relay):
    _configure(store, relay)
    _lsc(store, "SEP0000000000AB", NOW + dt.timedelta(days=2))
    with store.transaction() as tx:
        secretbox.put(tx, b"\x01" * 32, service_config.SMTP_PASSWORD_SECRET, "sealed with another secret")
    result = monitor.check(store, NOW)
    assert (result["result"], result["attempts"]) == ("failed", 0)
    assert result["error"] == "secret 'monitor.smtp_password' cannot be decrypted with this store's secret file"
    assert relay.messages == []


def test_monitor_run_never_checks_beside_the_service_that_leads_the_monitor(store, store_cli, relay, capsys):
    """``opencapf monitor run`` takes the service's monitor lead: while the service's scheduler holds it,
    the command says so in one line, exits 3 and neither checks nor mails; once free, it checks. Its
    ``--now`` is an hour ago: ``monitor run`` refuses a time the host's clock has not reached."""
    now = utc_now() - dt.timedelta(hours=1)
    _configure(store, relay)
    _lsc(store, "SEP0000000000E1", now + dt.timedelta(days=6))
    leading = Scheduling(store, clock=lambda: now)  # the service's scheduler, as every serving process runs it
    try:
        leading.tick()
        assert len(relay.messages) == 1
        with store.read() as tx:
            runs = records.last_run(tx)
        capsys.readouterr()
        code = cli_main([*store_cli, "monitor", "run", "--now", format_utc(now)])
        refused = capsys.readouterr()
        assert code == 3 and refused.out == "" and refused.err.count("\n") == 1, refused.err
        assert "another process leads the certificate monitor" in refused.err
        assert len(relay.messages) == 1
        with store.read() as tx:
            assert records.last_run(tx) == runs  # nothing checked, nothing recorded
    finally:
        leading.close()
    assert cli_main([*store_cli, "--json", "monitor", "run", "--now", format_utc(now)]) == 0
    with store.read() as tx:
        assert records.last_run(tx) != runs


def test_a_mail_the_relay_took_without_its_answer_arriving_is_not_sent_again(store, relay, caplog):
    """The connection to the relay is lost after the message went out, before the relay's answer: the relay
    may have taken it (here it did). It is not tried again, in this check or a later one: the run is
    ``unknown``, its warnings recorded, and the log and ``monitor show`` say so."""
    _configure(store, relay)
    _lsc(store, "SEP0000000000D1", NOW + dt.timedelta(days=6))
    relay.on_message = lambda _message: UNANSWERED
    with caplog.at_level(logging.WARNING, logger="opencapf.monitor"):
        run = monitor.check(store, NOW, sleep=_no_sleep([]))
    assert (run["result"], run["attempts"], run["mails_sent"]) == ("unknown", 1, 0)
    assert len(relay.messages) == 1
    assert "the relay's answer to the message was lost; it may have taken it" in run["error"]
    assert caplog.text.count("it may have taken it") == 1
    relay.on_message = None
    with store.read() as tx:
        assert len(records.sent_warnings(tx)) == 2  # thresholds 30 and 7
        shown = monitor.status(tx)
    assert shown["last_run"]["result"] == "unknown" and shown["last_success"] is None
    assert monitor.run_if_due(store, NOW + dt.timedelta(hours=25))["result"] == "nothing_due"
    assert len(relay.messages) == 1
