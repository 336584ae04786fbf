"""The commands that record or mail as at ``--now TIME`` never act as at a time the host's clock has not
reached, on either backend.

``monitor run`` records its check, and the warnings it mailed, as at ``--now`` and mails the days left
then; ``renew run`` schedules the renewals due at ``--now`` and records them as scheduled then (and
``jobs run-due``, tests/unit/plugins/module_utils/test_scheduled_jobs_truth.py). A time to come would
make the store, and the mail, tell what has not happened. Invariants, for ``--now`` at any time around
the host's clock:

- a time the clock has not reached is refused with exit status 2, naming ``--now`` and the rule, with
  nothing written and no mail sent;
- a time the clock has reached acts as at that time: the check recorded at it with the days left at it,
  the renewals due at it scheduled and recorded at it;
- ``monitor show --now`` only reads: any time, earlier or later, shows the warn window at that time
  and writes nothing.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from support.declarations import installed_lsc
from support.protocol import phone_row
from support.smtp import PASSWORD, SmtpRelay
from support.stores import dump
from _opencapf import service_config
from _opencapf.cli.main import main as cli_main
from _opencapf.store import monitor as monitor_records
from _opencapf.store import service as service_records
from _opencapf.vocabulary import format_utc, utc_now

pytestmark = pytest.mark.both_backends

REFUSED = "error: argument --now: must not be later than this host's clock"
# Around the host's clock: days either side, the seconds at its edge, and an hour ahead.
OFFSETS = st.one_of(st.integers(min_value=-3 * 86400, max_value=3 * 86400), st.integers(min_value=-3, max_value=3),
                    st.integers(min_value=3500, max_value=3700))
_examples = itertools.count(1)


@pytest.fixture
def relay(tmp_path):
    running = SmtpRelay(tmp_path)
    yield running
    running.stop()


def _installed_lsc(store, name, not_after: dt.datetime, **settings) -> str:
    """A phone with an installed LSC that ends at ``not_after``; the LSC's fingerprint."""
    return installed_lsc(store, name, not_after - dt.timedelta(days=365), not_after, **settings)


def _run(capsys, argv) -> tuple[int, str, str]:
    """``opencapf ARGV`` in this process: its exit status, output and error output."""
    capsys.readouterr()
    try:
        code = cli_main(argv)
    except SystemExit as stopped:
        code = stopped.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _at_the_clock(store, capsys, argv, offset):
    """Run ``ARGV --now (clock + offset)``: (now, exit status, output) once the refusal invariant is
    checked: a time the clock had not reached when the command ended is refused, with nothing written;
    one it had reached when it started is not."""
    before = dump(store)
    now = utc_now() + dt.timedelta(seconds=offset)
    started = utc_now()
    code, out, err = _run(capsys, [*argv, "--now", format_utc(now)])
    ended = utc_now()
    if now > ended:
        assert code == 2, (code, out, err)
    if now <= started:
        assert code == 0, (code, out, err)
    if code == 2:
        assert REFUSED in err and "--now" in err and "Traceback" not in err and out == "", err
        assert dump(store) == before, "a refused --now wrote to the store"
    return now, code, out


@settings(max_examples=20, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(OFFSETS)
@example(-3600)
@example(3600)
def test_monitor_run_never_checks_or_mails_as_at_a_time_to_come(store, store_cli, relay, capsys, offset):
    """``monitor run --now`` around the host's clock: a time to come is refused with no check recorded and
    no mail sent; any other checks as at it: the run recorded at it, the new LSC mailed with the days it
    has left at it."""
    service_config.converge(store, parameters_wanted=relay.settings(), monitor_smtp_password=PASSWORD)
    name = f"SEP0000{next(_examples):08X}"
    not_after = utc_now() + dt.timedelta(days=5)
    fingerprint = _installed_lsc(store, name, not_after)
    mails = len(relay.messages)
    now, code, out = _at_the_clock(store, capsys, [*store_cli, "--json", "monitor", "run"], offset)
    if code == 2:
        assert len(relay.messages) == mails, "a refused --now sent mail"
        return
    assert code == 0, out
    result = json.loads(out)
    assert result["checked_at"] == format_utc(now) and result["result"] == "sent", result
    (found,) = [item for item in result["certificates"] if item["subject"] == name]
    assert found["days_left"] == (not_after - now).days
    assert len(relay.messages) == mails + 1
    with store.read() as tx:
        assert monitor_records.last_run(tx)["checked_at"] == format_utc(now)
        warned = monitor_records.warned(tx, [fingerprint])
    assert warned == {(fingerprint, days) for days in (30, 7, 1) if not_after - now <= dt.timedelta(days=days)}


@settings(max_examples=20, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(OFFSETS)
@example(-3600)
@example(3600)
def test_renew_run_never_schedules_as_at_a_time_to_come(store, store_cli, capsys, offset):
    """``renew run --now`` around the host's clock: a time to come is refused with nothing scheduled; any
    other schedules the phones due at it, each renewal recorded as scheduled at it."""
    with store.transaction() as tx:
        service_records.write(tx, "test", {"renew_before_days": 30, "renew_max_per_day": 1000})
    name = f"SEP0001{next(_examples):08X}"
    _installed_lsc(store, name, utc_now() + dt.timedelta(days=10), operation="install_upgrade",
                   operation_status="succeeded")
    now, code, out = _at_the_clock(store, capsys, [*store_cli, "--json", "renew", "run"], offset)
    if code == 2:
        assert phone_row(store, name)["operation_status"] == "succeeded"
        return
    assert code == 0, out
    result = json.loads(out)
    assert result["at"] == format_utc(now) and name in [item["name"] for item in result["scheduled"]], result
    assert phone_row(store, name)["operation_status"] == "pending"
    with store.read() as tx:
        recorded = tx.query("SELECT r.scheduled_at FROM renewals r JOIN phones p ON p.id = r.phone_id "
                            "WHERE p.name = ?", (name,))
    assert [row["scheduled_at"] for row in recorded] == [format_utc(now)]


@pytest.mark.parametrize("days", [-400, 0, 20, 40, 100])
def test_monitor_show_reads_at_any_time_and_writes_nothing(store, store_cli, capsys, days):
    """``monitor show --now`` only reads: earlier or later than the host's clock, it lists the certificates
    within the warn window at that time and leaves the store as it was."""
    not_after = utc_now() + dt.timedelta(days=45)
    _installed_lsc(store, "SEP00000000ABCD", not_after)
    before = dump(store)
    now = utc_now() + dt.timedelta(days=days)
    code, out, err = _run(capsys, [*store_cli, "--json", "monitor", "show", "--now", format_utc(now)])
    assert code == 0, err
    listed = json.loads(out)["expiring_certificates"]
    within = (not_after - now).days <= 30  # monitor_warn_days [30, 7, 1]; an expired one too
    assert [item["device_name"] for item in listed] == (["SEP00000000ABCD"] if within else [])
    assert dump(store) == before


def test_renew_run_walks_the_days_behind_the_clock_bounded_per_day(store, store_cli, capsys):
    """``renew run --now`` at times the host's clock has passed works as at them, the 24-hour bound
    counted back from each (``renew_max_per_day`` 2, five phones due): two days ago two phones, ten hours
    later none (the day's bound is reached), 25 hours after the first two more, and the command at the host's
    clock (no ``--now``) the last one."""
    with store.transaction() as tx:
        service_records.write(tx, "test", {"renew_before_days": 30, "renew_max_per_day": 2})
    clock = utc_now()
    names = [f"SEP00000000B00{index}" for index in range(5)]
    for index, name in enumerate(names):
        _installed_lsc(store, name, clock + dt.timedelta(days=10, hours=index), operation="install_upgrade",
                       operation_status="succeeded")
    first = clock - dt.timedelta(hours=50)
    walk = [(first, names[:2]), (first + dt.timedelta(hours=10), []), (first + dt.timedelta(hours=25), names[2:4]),
            (None, names[4:])]
    for now, due in walk:
        code, out, err = _run(capsys, [*store_cli, "--json", "renew", "run",
                                       *(["--now", format_utc(now)] if now else [])])
        assert code == 0, err
        result = json.loads(out)
        assert [item["name"] for item in result["scheduled"]] == due, (now, result)
        if now is not None:
            assert result["at"] == format_utc(now)
    with store.read() as tx:
        recorded = tx.query("SELECT p.name, r.scheduled_at FROM renewals r JOIN phones p ON p.id = r.phone_id "
                            "ORDER BY p.name")
    assert [row["scheduled_at"] for row in recorded[:4]] == [format_utc(first)] * 2 + [
        format_utc(first + dt.timedelta(hours=25))] * 2
    assert recorded[4]["scheduled_at"] >= format_utc(clock)


def test_renew_run_as_at_an_earlier_time_decides_as_the_store_stood_then(store, store_cli, capsys):
    """``renew run --now`` days behind renewals already recorded (``renew_max_per_day`` 1): the renewal
    recorded at the host's clock, more than 24 hours later, leaves that day's room, and an LSC issued
    after ``--now`` is no candidate at it, though it is the phone's current one now."""
    with store.transaction() as tx:
        service_records.write(tx, "test", {"renew_before_days": 30, "renew_max_per_day": 1})
    clock = utc_now()
    for name, issued in (("SEP00000000C001", clock - dt.timedelta(days=10)),
                         ("SEP00000000C002", clock - dt.timedelta(days=5)),
                         ("SEP00000000C003", clock - dt.timedelta(hours=1))):
        installed_lsc(store, name, issued, clock + dt.timedelta(days=10, minutes=int(name[-1])),
                      operation="install_upgrade", operation_status="succeeded")
    walk = [(None, ["SEP00000000C001"]), (clock - dt.timedelta(days=3), ["SEP00000000C002"]),
            (clock - dt.timedelta(hours=2), [])]
    for now, due in walk:
        code, out, err = _run(capsys, [*store_cli, "--json", "renew", "run",
                                       *(["--now", format_utc(now)] if now else [])])
        assert code == 0, err
        assert [item["name"] for item in json.loads(out)["scheduled"]] == due, (now, out)
    assert phone_row(store, "SEP00000000C003")["operation_status"] == "succeeded"
