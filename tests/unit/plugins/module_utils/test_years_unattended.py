"""Years of unattended operation: a store walked by the service's own scheduler tick (``Scheduling``
with the clock given to it) through clock moves of hours to months forward (and back by up to an
hour: a clock set right), with phones enrolling (an LSC issued at the walk's moment and installed,
as a session does: ``lsc.issue``, then ``certificates.install`` and the operation's result; or not
stored, the phone losing power) and the operator's changes in between: phones added, upgraded and
removed, phones going offline and back, LSCs revoked, the CAPF certificate rotated (a new key) or
renewed (a new certificate for its key and subject), ``validity_days``, ``renew_before_days``,
``renew_max_per_day``, ``revoke_after_expiry``, ``crl_validity_hours`` and ``session_retention_days``
changed. After each tick, on both backends:

* every phone's current LSC, as the listing tells it at the moment, is the one the phone installed
  last, with its status as it is: never ``installed`` past its notAfter;
* every LSC is signed by the CAPF certificate active when it was issued, and its validity lies
  within that certificate's;
* no CRL served or published is past its nextUpdate (nor starts after the clock by more than
  ``CLOCK_SKEW``); every revoked LSC not expired is on the served CRL of the CAPF certificate that
  signed it, and no CRL lists an LSC that is not revoked; the files beside ``crl_path`` are the CRLs
  served; each CAPF certificate's CRL numbers only grow;
* automatic renewal schedules exactly the phones due (their current LSC installed, or revoked for
  its expiry, expires within ``renew_before_days``, a new one would end later, the phone is idle and
  not in ``auth_string`` mode, the LSC not renewed before), all of them unless ``renew_max_per_day``
  leaves no room, each LSC at most once; so a phone that comes when called is renewed before its
  LSC lapses whenever the service ticks inside the window, and after it when it did not;
* every issuance, revocation, rotation, CRL and renewal has its audit event;
* each enrolment's session record (its ``sessions`` row, its ``session.*`` event) is kept while younger
  than ``session_retention_days`` at the tick (all of them with 0), and is gone after the first tick at
  least an hour after every tick before it that finds it older; no other audit event is ever removed;
* no duty of the tick fails.

``OPENCAPF_YEARS_EXAMPLES`` (default 15 per backend) and ``OPENCAPF_YEARS_RANDOM`` (set: drawn anew
at each run) let a longer hunt run locally; a failing walk is reported as drawn, not shrunk
(shrinking walks of years takes minutes)."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import logging
import os
import tempfile

import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from support.capf_validity import PHONE_KEY, upload_capf
from support.store_phones import change_phone, create_phone
from _opencapf import reports, retention, revocation, service_config
from _opencapf.ca import certificates as c
from _opencapf.ca import crl as crl_module
from _opencapf.ca import keys, lsc
from _opencapf.dependencies import NameOID, x509
from _opencapf.errors import CertificateError
from _opencapf.server.scheduling import Scheduling
from _opencapf.store import certificates as certificate_records
from _opencapf.store import crls as crl_records
from _opencapf.store import open_store
from _opencapf.store import phones as phone_records
from _opencapf.store import renewals as renewal_records
from _opencapf.store import sessions as session_records
from _opencapf.vocabulary import CLOCK_SKEW, format_utc, utc_now

pytestmark = pytest.mark.both_backends

DAY = dt.timedelta(days=1)
NAMES = ("SEP00000000E001", "SEP00000000E002", "SEP00000000E003", "SEP00000000E004")
AUTH_MODES = ("null_string", "existing_cert_mic", "existing_cert_lsc", "auth_string")
SUBJECTS = tuple(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"Example CAPF {n}")]) for n in (1, 2))
_stores = itertools.count(1)

VERBS = ("add", "add", "offline", "online", "flaky", "upgrade", "revoke", "remove", "rotate", "renew_capf", "validity_days",
         "renew_before_days", "renew_max_per_day", "revoke_after_expiry", "crl_validity_hours", "session_retention_days",
         "none", "none")
VALUES = {
    "validity_days": (30, 90, 365, 730),
    "renew_before_days": (0, 7, 30, 60),
    "renew_max_per_day": (1, 2, 100),
    "capf_days": (120, 400, 1095),
    "crl_validity_hours": (1, 24, 168),
    "session_retention_days": (0, 30, 400),
}
# Clock moves between two ticks, in minutes: forward by hours, days, or months (the service down, or only
# its tick seen), or back by up to an hour (the host's clock set right).
jumps = st.one_of(st.integers(60, 48 * 60), st.integers(24 * 60, 20 * 24 * 60), st.integers(20 * 24 * 60, 120 * 24 * 60),
                  st.integers(-60, -1))
steps = st.lists(st.tuples(st.sampled_from(VERBS), st.integers(0, len(NAMES) - 1), st.integers(0, 11), jumps),
                 min_size=5, max_size=30)


class _Failures(logging.Handler):
    """The scheduler's failed duties: a warning or error naming a duty, but for held-back renewals and the
    clock set back (the CRL before the one signed starts after the clock: said, as it should be)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.records: list[str] = []

    def emit(self, record):
        message = record.getMessage()
        expected = "automatic renewal holds back" in message or "set both clocks right" in message
        duty = record.name == "opencapf.server" and message.startswith("scheduler: ") and not expected
        problem = record.name == "opencapf.revocation" and message.startswith("CRL: ")
        if record.levelno >= logging.ERROR or duty or problem:
            self.records.append(message)


class _Walk:
    """The store, its scheduler, and the truth kept by the test beside them."""

    def __init__(self, store, start: dt.datetime, capf_days: int, published: str):
        self.store = store
        self.published = published
        self.now = start
        self.scheduling = Scheduling(store, clock=lambda: self.now)
        self.key = keys.generate("ec256")
        self.capf = upload_capf(store, start, capf_days, key=self.key, subject=SUBJECTS[0])
        self.capfs = {c.fingerprint(self.capf): self.capf}
        self.phones: dict[str, dict] = {}  # name: {"online", "auth_mode", "current" (serial)}
        self.lscs: dict[str, dict] = {}  # serial: {"phone", "signer", "not_before", "not_after", "revoked", "id"}
        self.crl_numbers: dict[str, int] = {}  # signer fingerprint: its newest CRL number seen
        self.renewed: set[int] = set()  # LSC ids a renewal was scheduled for
        self.ticked: list[dt.datetime] = []  # the clock of each tick so far
        self.sessions = 0  # session ids given
        self.parameters = {"validity_days": 365, "renew_before_days": 30, "renew_max_per_day": 100,
                           "revoke_after_expiry": True, "crl_validity_hours": 168, "session_retention_days": 400,
                           "crl_path": os.path.join(published, "capf.crl")}
        self._set({})

    # -- the operator's and the phones' events ---------------------------------------------------

    def _set(self, changes: dict) -> None:
        self.parameters.update(changes)
        service_config.converge(self.store, parameters_wanted=dict(self.parameters))

    def apply(self, verb: str, index: int, pick: int) -> None:
        name = NAMES[index]
        phone = self.phones.get(name)
        if verb == "add" and phone is None:
            auth_mode = AUTH_MODES[pick % len(AUTH_MODES)]
            with self.store.transaction() as tx:
                create_phone(tx, name, operation="install_upgrade", auth_mode=auth_mode, secret=self.store.secret(),
                             auth_string="4711" if auth_mode == "auth_string" else None)
            self.phones[name] = {"online": True, "auth_mode": auth_mode, "current": None, "loses": 0}
        elif verb in ("offline", "online") and phone is not None:
            phone["online"] = verb == "online"
        elif verb == "flaky" and phone is not None:
            phone["loses"] = pick % 3 + 1  # its next sessions lose power before the phone stores its LSC
        elif verb == "revoke" and phone is not None:
            revoked = revocation.revoke_lsc(self.store, name, "key_compromise")["revoked"]
            for serial in revoked:
                self.lscs[serial]["revoked"] = True
        elif verb == "remove" and phone is not None:
            with self.store.transaction() as tx:
                phone_records.delete(tx, "test", name)
            for item in self.lscs.values():
                if item["phone"] == name:
                    self.renewed.discard(item["id"])  # its renewals go with it (and SQLite may give its id again)
                    item["revoked"] = item["revoked"] or not item["stale"]  # its LSCs still valid are revoked: CAPF manages them no more
                    item["phone"] = None
            del self.phones[name]
        elif verb == "rotate":
            self.key = keys.generate("ec256")
            self._upload(pick, SUBJECTS[pick % 2])
        elif verb == "renew_capf":
            self._upload(pick, self.capf.subject)
        elif verb == "upgrade" and phone is not None:
            with self.store.transaction() as tx:
                change_phone(tx, name, operation="install_upgrade", reissue=True)
        elif verb in ("validity_days", "renew_before_days", "renew_max_per_day", "crl_validity_hours", "session_retention_days"):
            self._set({verb: VALUES[verb][pick % len(VALUES[verb])]})
        elif verb == "revoke_after_expiry":
            self._set({verb: bool(pick % 2)})

    def _session(self, name: str) -> None:
        """The session record of a phone's connection, as the service writes it."""
        self.sessions += 1
        with self.store.transaction() as tx:
            session_records.record(tx, "capf-server", session_id=self.sessions, device_name=name, peer="192.0.2.7:50000",
                                   operation="install_upgrade", outcome="succeeded", reason="",
                                   started_at=format_utc(self.now), duration_ms=900)

    def _session_records(self) -> tuple[dict, dict, set]:
        with self.store.read() as tx:
            rows = {row["id"]: row["started_at"] for row in tx.query("SELECT id, started_at FROM sessions")}
            events = tx.query("SELECT id, at, action FROM audit_events")
        return (rows, {event["id"]: event["at"] for event in events if event["action"].startswith("session.")},
                {event["id"] for event in events if not event["action"].startswith("session.")})

    def _upload(self, pick: int, subject) -> None:
        self.capf = upload_capf(self.store, self.now, VALUES["capf_days"][pick % 3], key=self.key, subject=subject)
        self.capfs[c.fingerprint(self.capf)] = self.capf

    def enrol_pending(self) -> None:
        """The online phones with an operation pending connect: each gets an LSC from the active CAPF
        certificate, valid from now, and installs it (none while that certificate has expired)."""
        with self.store.read() as tx:
            pending = sorted(name for name, row in phone_records.by_name(tx).items()
                             if row["operation_status"] == "pending" and self.phones[name]["online"])
        for name in pending:
            self._session(name)
            try:
                issued = lsc.issue(self.store, name, PHONE_KEY.public_key(), source="capf", now=self.now)
            except CertificateError:
                assert c.not_after(self.capf) <= self.now, "only an expired CAPF certificate refuses to issue"
                continue
            self.lscs[issued.serial] = {"phone": name, "signer": c.fingerprint(self.capf), "id": issued.id,
                                        "not_before": format_utc(self.now), "not_after": issued.not_after,
                                        "revoked": False, "stale": False, "expired": False}
            if self.phones[name]["loses"]:
                # The phone lost power before storing it: the session's end finds it not stored (stale).
                self.phones[name]["loses"] -= 1
                with self.store.transaction() as tx:
                    phone = phone_records.get(tx, name)
                    assert certificate_records.set_stale_if_waiting(tx, "test", phone, issued.id)
                    phone_records.set_operation_result(tx, "test", phone, "failed", "phone did not store the LSC")
                self.lscs[issued.serial]["stale"] = True
                continue
            with self.store.transaction() as tx:
                phone = phone_records.get(tx, name)
                changes = certificate_records.install(tx, "test", phone, issued.id)
                phone_records.set_operation_result(tx, "test", phone, "succeeded")
            previous = self.phones[name]["current"]
            if previous is not None and self.lscs[previous]["id"] in changes["revoked"]:
                self.lscs[previous]["revoked"] = True  # superseded
            self.phones[name]["current"] = issued.serial

    # -- the scheduler ---------------------------------------------------------------------------

    def _due(self) -> set[str]:
        """The phones automatic renewal must take at this moment, by its rule (before the tick)."""
        days = self.parameters["renew_before_days"]
        capf_end = format_utc(c.not_after(self.capf))
        now = format_utc(self.now)
        if not days or capf_end <= now:
            return set()
        replacement = min(format_utc(self.now + self.parameters["validity_days"] * DAY), capf_end)
        window = format_utc(self.now + days * DAY)
        with self.store.read() as tx:
            rows = phone_records.by_name(tx)
        due = set()
        for name, phone in self.phones.items():
            current = self.lscs.get(phone["current"] or "")
            # An LSC revoked for its expiry (by this tick's revocation duty, or an earlier one) is due as
            # one that expired installed; one revoked otherwise is not.
            if current is None or (current["revoked"] and not current["expired"]):
                continue
            if rows[name]["operation_status"] in ("pending", "in_progress"):
                continue
            if phone["auth_mode"] == "auth_string" or current["id"] in self.renewed:
                continue
            if current["not_after"] < window and current["not_after"] < replacement:
                due.add(name)
        return due

    def tick(self) -> None:
        due = self._due()
        sure = not self.ticked or self.now >= max(self.ticked) + retention.ROUND_EVERY
        kept_before = self._session_records()
        self.scheduling.tick()
        self.ticked.append(self.now)
        self._check_session_records(kept_before, sure)
        now = format_utc(self.now)
        for item in self.lscs.values():
            if self.parameters["revoke_after_expiry"] and not item["stale"] and item["not_after"] < now:
                item["expired"] = item["expired"] or not item["revoked"]
                item["revoked"] = True  # cessation of operation, by the tick
        with self.store.read() as tx:
            rows = tx.query("SELECT p.name, r.certificate_id FROM renewals r JOIN phones p ON p.id = r.phone_id")
            room = self.parameters["renew_max_per_day"] - renewal_records.count_since(tx, format_utc(self.now - DAY))
        renewed = [row["certificate_id"] for row in rows]
        assert len(renewed) == len(set(renewed)), ("an LSC renewed twice", now)
        scheduled = [row for row in rows if row["certificate_id"] not in self.renewed]
        taken = {row["name"] for row in scheduled}
        # Renewal takes only phones that are due, each for its current LSC, and leaves one due only for lack of room.
        assert taken <= due, ("renewal scheduled a phone not due", sorted(taken - due), now)
        for row in scheduled:
            assert row["certificate_id"] == self.lscs[self.phones[row["name"]]["current"]]["id"]
            self.renewed.add(row["certificate_id"])
        assert taken == due or room <= 0, ("renewal left due phones unscheduled", sorted(due - taken), now)
        self.check()

    # -- the invariants --------------------------------------------------------------------------

    def _check_session_records(self, kept_before: tuple, sure: bool) -> None:
        days = self.parameters["session_retention_days"]
        before = format_utc(self.now - days * DAY)
        rows, events, others = self._session_records()
        for held, kept in ((kept_before[0], rows), (kept_before[1], events)):
            for key, at in held.items():
                if not days or at >= before:
                    assert key in kept, ("a session record removed before its time", at, before)
                elif sure:
                    assert key not in kept, ("a session record kept past its retention", at, before)
        assert kept_before[2] <= others, "an audit event other than a session's removed"

    def check(self) -> None:
        now = format_utc(self.now)
        with self.store.read() as tx:
            listed = {row["device_name"]: row["lsc"] for row in reports.phone_rows(tx, None, now=self.now)}
            served, _withheld = revocation.served_crls(tx, self.now)
            crls = {fingerprint: crl_module.describe(crl_records.der(tx, row["number"]))
                    for fingerprint, row in served.items()}
            newest = {row["signer_fingerprint"]: row["number"] for row in crl_records.newest_per_signer(tx)}
            rows = {row["serial"]: row for row in tx.query(
                "SELECT serial, status, pem, not_before, not_after FROM certificates WHERE kind = 'lsc'")}
        # The listing: each phone's current LSC is the one it installed last, its status as it is now.
        assert set(listed) == set(self.phones), now
        for name, phone in self.phones.items():
            shown = listed[name]
            if phone["current"] is None:
                assert shown is None, (name, shown)
                continue
            truth = self.lscs[phone["current"]]
            status = "revoked" if truth["revoked"] else "expired" if truth["not_after"] < now else "installed"
            assert shown is not None and (shown["serial"], shown["status"]) == (phone["current"], status), \
                (name, shown, status, now)
            assert shown["status"] != "installed" or shown["not_after"] >= now, ("installed past its notAfter", name)
        # Every LSC: signed by the CAPF certificate active at its issuance, valid then, ending no later than it.
        for serial, row in rows.items():
            truth = self.lscs[serial]
            assert (row["status"] == "revoked") == truth["revoked"], (serial, row["status"], now)
            certificate = c.load_pem_certificate(row["pem"])
            signer = self.capfs[truth["signer"]]
            assert c.signed_by(certificate, signer) and certificate.issuer == signer.subject, serial
            assert c.not_before(signer) <= c.not_before(certificate) < c.not_after(signer), ("an LSC starts before its signer", serial)
            assert c.not_after(certificate) <= c.not_after(signer), ("an LSC outlives its signer", serial)
        # The CRLs: current, complete, and listing nothing that is not revoked.
        skew = format_utc(self.now + CLOCK_SKEW)  # a clock set back starts no CRL before it is that far behind
        for fingerprint, crl in crls.items():
            assert crl["this_update"] <= skew and now < crl["next_update"], ("a CRL not current", fingerprint, now)
            for entry in crl["entries"]:
                assert self.lscs[entry["serial"]]["revoked"], ("a CRL lists an LSC not revoked", entry["serial"])
        for serial, truth in self.lscs.items():
            if truth["revoked"] and truth["not_after"] >= now:
                listed_on = crls.get(truth["signer"], {"entries": []})["entries"]
                assert serial in {entry["serial"] for entry in listed_on}, \
                    ("a revoked LSC not expired is on no current CRL of its signer", serial, now)
        # The files beside crl_path are the CRLs served, the active one's also at crl_path itself.
        files = {}
        for name in os.listdir(self.published):
            with open(os.path.join(self.published, name), "rb") as handle:
                files[name] = crl_module.describe(handle.read())["number"]
        wanted = {os.path.basename(crl_module.issuer_location(self.parameters["crl_path"], fingerprint)): crl["number"]
                  for fingerprint, crl in crls.items()}
        active = c.fingerprint(self.capf)
        if active in crls:
            wanted["capf.crl"] = crls[active]["number"]
        assert files == wanted, now
        for fingerprint, number in newest.items():
            assert number >= self.crl_numbers.get(fingerprint, 0), ("a CRL number went back", fingerprint)
            self.crl_numbers[fingerprint] = number

    def check_audit(self) -> None:
        with self.store.read() as tx:
            events = tx.query("SELECT action, subject, details FROM audit_events")
            renewals = renewal_records.count_since(tx, "0")
        details = [(event["action"], json.loads(event["details"] or "{}")) for event in events]
        for serial in self.lscs:
            assert any(action == "certificate.issued" and told.get("serial") == serial for action, told in details), serial
        revoked = sum(1 for truth in self.lscs.values() if truth["revoked"])
        assert sum(1 for action, _told in details if action == "certificate.revoked") >= revoked
        for number in self.crl_numbers.values():
            assert any(action == "crl.signed" and told.get("number") == number for action, told in details), number
        for fingerprint in self.capfs:
            assert any(action.startswith("capf_certificate.") and told.get("fingerprint") == fingerprint
                       for action, told in details), fingerprint
        scheduled = sum(int(told.get("scheduled", 0)) for action, told in details if action == "renewal.schedule")
        assert scheduled >= renewals  # a removed phone takes its renewals along

    def close(self) -> None:
        self.scheduling.close()


@settings(max_examples=int(os.environ.get("OPENCAPF_YEARS_EXAMPLES", "15")), deadline=None,
          derandomize=os.environ.get("OPENCAPF_YEARS_RANDOM") is None, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(capf_days=st.sampled_from(VALUES["capf_days"]), walk=steps)
# The clock set back half an hour before the CAPF certificate starts; the phone is upgraded then.
@example(capf_days=400, walk=[("add", 0, 0, -30), ("upgrade", 0, 0, 60)])
# The service down for 400 days: the LSC expired meanwhile, is revoked for it, and renewed all the same.
@example(capf_days=1095, walk=[("add", 0, 0, 400 * 24 * 60), ("none", 0, 0, 60)])
# A renewal whose session fails (the phone loses power before storing): its LSC is not renewed again.
@example(capf_days=1095, walk=[("add", 0, 0, 60), ("flaky", 0, 0, 340 * 24 * 60), ("none", 0, 0, 24 * 60)])
def test_years_of_unattended_operation_never_tell_a_lie_about_a_certificate(
        more_store_locations, state_dir, tmp_path, capf_days, walk):
    store = open_store(more_store_locations(f"years-{next(_stores)}"), state_dir=state_dir, actor="test")
    failures = _Failures()
    logger = logging.getLogger("opencapf")
    logger.addHandler(failures)
    published = tempfile.mkdtemp(dir=tmp_path)
    walker = _Walk(store, utc_now().replace(microsecond=0), capf_days, published)
    try:
        for verb, index, pick, minutes in walk:
            walker.apply(verb, index, pick)
            walker.tick()
            walker.enrol_pending()
            walker.tick()
            assert failures.records == [], failures.records
            walker.now += dt.timedelta(minutes=minutes)
        walker.tick()
        walker.check_audit()
        assert failures.records == [], failures.records
    finally:
        logger.removeHandler(failures)
        walker.close()
        store.close()
