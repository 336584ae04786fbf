"""Monitor mail is sent at most once per event, and never lost silently.

Two nodes share one PostgreSQL store and a real SMTP relay. The node that leads the ``monitor`` duty
mails a warning; while the relay holds the message (before it answers), the node's store connection is
lost: its session ends, and the lead with it. The other node then takes the lead and checks, later. The
warning must not be mailed a second time, whatever the relay answered: the warnings are recorded before
the mail is sent. What the first node could not record is not hidden: it logs it, and the run's result
stays ``unknown`` in the store (``monitor show``, ``capf_info``)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import logging

import psycopg
import pytest

from support.declarations import installed_lsc
from support.leads import cut, lead_holder, until
from support.smtp import PASSWORD, SmtpRelay
from _opencapf import monitor, service_config
from _opencapf.server.scheduling import Scheduling
from _opencapf.store import monitor as records
from _opencapf.vocabulary import format_utc, utc_now

pytestmark = pytest.mark.parametrize("backend", ["postgresql"], indirect=True)

NAME = "SEP0000000000C1"
REFUSAL = "451 4.3.0 try again later"


@pytest.fixture
def relay(tmp_path):
    running = SmtpRelay(tmp_path)
    yield running
    running.stop()


def _mailed(relay) -> list[tuple[str, int]]:
    """Every (fingerprint, threshold) the relay took a warning of, once per message."""
    keys = []
    for mail in relay.messages:
        for part in mail["message"].iter_attachments():
            keys += [(row["fingerprint"], int(row["threshold"])) for row in csv.DictReader(io.StringIO(part.get_content()))]
    return keys


@pytest.mark.parametrize("relay_answer", ["taken", "taken on a retry", "refused"])
def test_a_warning_is_mailed_at_most_once_across_a_lost_connection_and_a_lead_change(store, relay, caplog, relay_answer):
    now = utc_now() - dt.timedelta(hours=1)
    service_config.converge(store, parameters_wanted=relay.settings(), monitor_smtp_password=PASSWORD)
    fingerprint = installed_lsc(store, NAME, now - dt.timedelta(days=300), now + dt.timedelta(days=6))
    watch = psycopg.connect(store.location, autocommit=True)
    lost, seen = [], []

    def lose_the_leader(_message):
        seen.append(_message)
        if len(seen) == 1:  # the first node's first attempt: its connection is lost while the relay holds it
            lost.append(lead_holder(watch, monitor.LEAD))
            cut(watch, lost[0])
        refused = {"taken": 0, "taken on a retry": 1, "refused": monitor.SEND_ATTEMPTS}[relay_answer]
        return REFUSAL if len(seen) <= refused else None  # the relay takes every later message

    relay.on_message = lose_the_leader
    first = Scheduling(store, clock=lambda: now)
    second = Scheduling(store, clock=lambda: now + dt.timedelta(hours=25))  # past the monitor's interval
    try:
        with caplog.at_level(logging.INFO):
            first.tick()
            assert len(lost) == 1 and lost[0] is not None
            until(lambda: lead_holder(watch, monitor.LEAD) is None, what="the lost session's end")
            second.tick()  # takes the lead the first node lost, and checks a day later
            assert lead_holder(watch, monitor.LEAD) not in (None, lost[0])
        # Taken: mailed once. Refused at every attempt: the first node could not record that, and the warnings
        # stay recorded as sent: not mailed again (the rule prefers that to a mail twice), reported instead.
        sent = relay_answer != "refused"
        assert _mailed(relay) == ([(fingerprint, 7)] if sent else []), "a warning was mailed again"
        with store.read() as tx:
            runs = tx.query("SELECT result, warnings, mails_sent, error FROM monitor_runs ORDER BY id")
            assert {(row["fingerprint"], row["threshold"]) for row in records.sent_warnings(tx)} == {(fingerprint, 30), (fingerprint, 7)}
            shown = monitor.status(tx)
        # The first node's run: its outcome could not be recorded, and says so; the second found nothing due.
        assert [(row["result"], row["warnings"]) for row in runs] == [("unknown", 1), ("nothing_due", 0)]
        assert runs[0]["error"] == monitor.UNKNOWN_OUTCOME
        assert shown["last_success"] == format_utc(now + dt.timedelta(hours=25))
        said = [record.getMessage() for record in caplog.records if "could not be recorded" in record.getMessage()]
        assert len(said) == 1 and ("was sent" if sent else "was not sent") in said[0], said
    finally:
        relay.on_message = None
        first.close()
        second.close()
        watch.close()
