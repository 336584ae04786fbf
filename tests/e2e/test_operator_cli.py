"""What an operator asks from a terminal: ``phones list|show``, ``ca show --pem``, ``trust list|show``,
``service show``, and the global options given after the verb; on both store backends.

The store is made like the demo's: real phones enrol over TLS against the real service, one of
them with a wrong authentication string, so its failure and lock-out come from a real session.
"""

from __future__ import annotations

import argparse
import csv
import io
import json

import pytest

from support import certfactory
from support.phones import phone, run_enrol
from support.protocol import RunningServer, add_phone
from support.tools import openssl, run_cli
from _opencapf import parameters, reports, trust
from _opencapf.ca import authority
from _opencapf.cli import main as cli
from _opencapf.dependencies import serialization, x509
from _opencapf.store import ENV_STATE_DIR, open_store
from _opencapf.store import service as service_records

GOOD, WRONG, IDLE = "SEP0000000000A1", "SEP0000000000A2", "SEP0000000000B3"


def _run(capsys, *argv) -> tuple[int, str, str]:
    """The CLI in this process (``main``); its exit status, standard output and standard error."""
    status = cli.main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def _json(capsys, *argv):
    status, out, err = _run(capsys, *argv)
    assert status == 0, err
    return json.loads(out)


@pytest.fixture
def fleet_store(store_location, state_dir, monkeypatch):
    """A store with three phones after real sessions: GOOD has its LSC, WRONG failed with a wrong
    authentication string and is locked out, IDLE has no operation."""
    monkeypatch.setenv(ENV_STATE_DIR, state_dir)
    store = open_store(store_location, state_dir=state_dir, actor="test")
    authority.ensure(store)
    with store.transaction() as tx:
        service_records.write(tx, "test", {"lockout_failures": 1})
    add_phone(store, GOOD, operation="install_upgrade", auth_mode="null_string", key_order="ec", device_pool="HQ",
              model="CP-8865")
    add_phone(store, WRONG, operation="install_upgrade", auth_mode="auth_string", auth_string="1234",
              device_pool="HQ", model="CP-8845")
    add_phone(store, IDLE, device_pool="Lobby", model="CP-7841")
    yield store
    store.close()


def _enrol_fleet(store_location, tmp_path):
    server = RunningServer(store_location, step_timeout=5.0)
    try:
        assert run_enrol(phone(tmp_path, GOOD), server).outcome == "ok"
        wrong = phone(tmp_path, WRONG, auth_mode="auth_string", auth_string="9999")
        assert run_enrol(wrong, server).outcome != "ok"
    finally:
        server.stop()


def _names(rows) -> list[str]:
    return [row["device_name"] for row in rows]


def test_phones_list_and_show_answer_the_status_questions(fleet_store, store_location, store_options, tmp_path,
                                                          capsys):
    _enrol_fleet(store_location, tmp_path)
    listed = _json(capsys, "phones", "list", *store_options, "--json")
    assert _names(listed) == [GOOD, WRONG, IDLE]
    # The listing is capf_info's query, not a second one: the same rows for the same filters.
    assert listed == reports.gather(fleet_store, ["phones"])["phones"]
    filters = {
        ("--status", "failed"): [WRONG],
        ("--status", "succeeded"): [GOOD],
        ("--locked",): [WRONG],
        ("--not-locked",): [GOOD, IDLE],
        ("--lsc-status", "installed"): [GOOD],
        ("--lsc-status", "none"): [WRONG, IDLE],
        ("--device-pool", "HQ"): [GOOD, WRONG],
        ("--device-pool", "Lobby", "--device-pool", "HQ"): [GOOD, WRONG, IDLE],
        ("--model", "CP-8845"): [WRONG],
        ("--operation", "none"): [IDLE],
        ("--operation", "install_upgrade", "--not-locked"): [GOOD],
        ("--name", "sep0000000000a?"): [GOOD, WRONG],
        ("--expires-before", "2999-01-01"): [GOOD],
        ("--expires-before", "2000-01-01"): [],
    }
    for options, expected in filters.items():
        rows = _json(capsys, "--json", "phones", "list", *options, *store_options)
        assert _names(rows) == expected, options
    failed = next(row for row in listed if row["device_name"] == WRONG)
    assert failed["operation_status"] == "failed" and failed["locked"] is True
    reason = failed["operation_reason"]
    assert reason, "a failed phone lists the reason of its failure"

    status, out, _err = _run(capsys, "phones", "list", *store_options)
    assert status == 0
    header, *lines = out.splitlines()
    assert header.split()[:3] == ["device_name", "device_pool", "model"]
    wrong_line = next(line for line in lines if line.startswith(WRONG))
    assert reason in wrong_line and "failed" in wrong_line
    # Aligned: every column starts at the same offset on every line.
    offset = header.index("operation_status")
    assert all(line[offset:].startswith(status) for line, status in
               zip(lines, ("succeeded", "failed", "none")))

    status, out, _err = _run(capsys, "phones", "list", "--csv", *store_options)
    rows = list(csv.DictReader(io.StringIO(out)))
    assert status == 0 and _names(rows) == [GOOD, WRONG, IDLE]
    by_name = {row["device_name"]: row for row in rows}
    assert by_name[WRONG]["operation_reason"] == reason and by_name[WRONG]["locked"] == "yes"
    assert by_name[GOOD]["lsc_status"] == "installed" and by_name[IDLE]["lsc_status"] == "none"

    shown = _json(capsys, "phones", "show", WRONG.lower(), "--json", *store_options)
    assert shown["operation"]["status"] == "failed" and shown["operation"]["reason"] == reason
    assert shown["lockout"] == {"locked": True, "authentication_failures": 1}
    assert shown["lsc"] is None and shown["settings"]["authentication_string"] == "(set)"
    assert shown["sessions"] and shown["sessions"][0]["reason"], "the last session's reason is shown"
    good = _json(capsys, "phones", "show", GOOD, "--json", *store_options)
    assert good["lsc"]["status"] == "installed" and good["operation"]["status"] == "succeeded"
    assert good["sessions"][0]["outcome"] == "succeeded" and good["pending_csrs"] == []

    status, out, _err = _run(capsys, "phones", "show", WRONG, *store_options)
    assert status == 0 and reason in out and "locked" in out and shown["sessions"][0]["reason"] in out
    status, _out, err = _run(capsys, "phones", "show", "SEP0000000000FF", *store_options)
    assert status == 1 and err.strip() == "opencapf: error: phone SEP0000000000FF is not in the store"
    status, _out, err = _run(capsys, "phones", "list", "--expires-before", "soon", *store_options)
    assert status == 1 and "lsc_expires_before" in err and "Traceback" not in err


def test_phones_list_and_show_tell_an_lsc_past_its_notafter_expired(fleet_store, store_location, store_options,
                                                                    tmp_path, capsys):
    """Until the scheduler revokes it (if ever), an installed LSC whose notAfter has passed is listed,
    shown and selected as expired, not as installed."""
    _enrol_fleet(store_location, tmp_path)
    with fleet_store.transaction() as tx:
        tx.execute("UPDATE certificates SET not_after = '2026-01-01T00:00:00Z' WHERE kind = 'lsc'")
    listed = {row["device_name"]: row["lsc"] for row in _json(capsys, "phones", "list", *store_options, "--json")}
    assert listed[GOOD]["status"] == "expired" and listed[IDLE] is None
    assert _names(_json(capsys, "--json", "phones", "list", "--lsc-status", "expired", *store_options)) == [GOOD]
    assert _names(_json(capsys, "--json", "phones", "list", "--lsc-status", "installed", *store_options)) == []
    status, out, _err = _run(capsys, "phones", "list", "--csv", *store_options)
    by_name = {row["device_name"]: row["lsc_status"] for row in csv.DictReader(io.StringIO(out))}
    assert status == 0 and by_name[GOOD] == "expired"
    assert _json(capsys, "phones", "show", GOOD, "--json", *store_options)["lsc"]["status"] == "expired"


def _reencoded(certificates) -> str:
    return "".join(certificate.public_bytes(serialization.Encoding.PEM).decode() for certificate in certificates)


def test_ca_show_pem_prints_only_pem(fleet_store, store_options, tmp_path, capsys):
    authority.regenerate(fleet_store, "ec256")
    status, out, _err = _run(capsys, "ca", "show", "--pem", *store_options)
    assert status == 0
    certificates = x509.load_pem_x509_certificates(out.encode())
    assert len(certificates) == 1 and out == _reencoded(certificates), "nothing but the PEM"
    (tmp_path / "capf.pem").write_text(out)
    subject = openssl("x509", "-in", str(tmp_path / "capf.pem"), "-noout", "-subject").stdout.decode()
    assert "CAPF-" in subject
    status, out, _err = _run(capsys, "ca", "show", "--history", "--pem", *store_options)
    history = x509.load_pem_x509_certificates(out.encode())
    assert status == 0 and len(history) == 2 and out == _reencoded(history)
    assert history[0] == certificates[0], "newest first"
    summary = _json(capsys, "ca", "show", "--json", "--pem", *store_options)
    assert summary["pem"].startswith("-----BEGIN CERTIFICATE-----") and summary["active"] is True
    assert "pem" not in _json(capsys, "ca", "show", "--json", *store_options)


def test_trust_list_and_show(fleet_store, store_options, capsys):
    pem = certfactory.pem(certfactory.make("Example Root")[0])
    trust.converge(fleet_store, trust_store=["capf-trust", "callmanager-trust"], content=pem)
    listed = _json(capsys, "trust", "list", "--json", *store_options)
    assert [row["trust_store"] for row in listed] == ["callmanager-trust", "capf-trust"]
    fingerprint = listed[0]["fingerprint"]
    only = _json(capsys, "trust", "list", "--trust-store", "capf-trust", "--json", *store_options)
    assert [row["trust_store"] for row in only] == ["capf-trust"]
    status, out, _err = _run(capsys, "trust", "list", "--csv", *store_options)
    assert status == 0 and [row["fingerprint"] for row in csv.DictReader(io.StringIO(out))] == [fingerprint] * 2
    status, out, _err = _run(capsys, "trust", "show", fingerprint, "--pem", *store_options)
    assert status == 0 and out.strip() == pem.strip()
    shown = _json(capsys, "trust", "show", fingerprint.upper(), "--json", *store_options)
    assert {row["trust_store"] for row in shown} == {"capf-trust", "callmanager-trust"}
    assert all("pem" not in row for row in shown)
    status, _out, err = _run(capsys, "trust", "show", "00" * 32, *store_options)
    assert status == 1 and "no trust store holds" in err
    status, _out, err = _run(capsys, "trust", "show", "xyz", *store_options)
    assert status == 1 and err.startswith("opencapf: error: fingerprint must be a SHA-256 fingerprint")


@pytest.mark.usefixtures("fleet_store")
def test_service_show_states_every_parameter_with_its_default(store_options, capsys):
    rows = _json(capsys, "service", "show", "--json", *store_options)
    assert [row["name"] for row in rows] == list(parameters.PARAMETERS)
    by_name = {row["name"]: row for row in rows}
    for name, parameter in parameters.PARAMETERS.items():
        assert by_name[name]["default"] == parameter.default
        assert by_name[name]["restart"] is parameter.restart
    assert by_name["lockout_failures"]["value"] == 1 and by_name["lockout_failures"]["is_default"] is False
    assert by_name["port"]["value"] == 3804 and by_name["port"]["is_default"] is True
    status, out, _err = _run(capsys, "service", "show", *store_options)
    assert status == 0
    line = next(line for line in out.splitlines() if line.startswith("listen_addresses "))
    assert line.split()[1:4] == ["0.0.0.0", "0.0.0.0", "restart"]


def _parsers(parser: argparse.ArgumentParser, path=()):
    """Every parser of the command line below the top one, with its verb path."""
    for action in parser._actions:  # pylint: disable=protected-access
        if isinstance(action, argparse._SubParsersAction):  # pylint: disable=protected-access
            for name, child in action.choices.items():
                yield path + (name,), child
                yield from _parsers(child, path + (name,))


def test_global_options_are_accepted_after_every_verb():
    top = cli.build_parser()
    verbs = list(_parsers(top))
    assert len(verbs) > 20
    for path, parser in verbs:
        options = parser._option_string_actions  # pylint: disable=protected-access
        for option in cli.GLOBAL_OPTIONS:
            assert option in options, f"opencapf {' '.join(path)} does not take {option}"
            assert options[option].default is argparse.SUPPRESS, (path, option)
    # Parsed alike, before or after the verb; given in both places, the one after the verb counts.
    for path in (("ca", "show"), ("phones", "list"), ("service", "show"), ("trust", "list"), ("jobs", "list"),
                 ("csr", "list"), ("stale-lsc", "list")):
        before = top.parse_args(["--json", "--store", "/s", "-v", *path])
        after = top.parse_args([*path, "--json", "--store", "/s", "-v"])
        middle = top.parse_args([path[0], "--json", "--store", "/s", "-v", *path[1:]])
        assert vars(before) == vars(after) == vars(middle), path
        assert (after.json, after.store, after.verbose) == (True, "/s", 1)
        assert top.parse_args(["--store", "/a", *path, "--store", "/b"]).store == "/b"
        assert top.parse_args([*path]).store is None and top.parse_args([*path]).json is False


def test_options_after_the_verb_in_a_real_process(store_options, capsys, monkeypatch):
    monkeypatch.delenv(ENV_STATE_DIR, raising=False)  # main() sets it from --state-dir; undone after the test
    created = _json(capsys, "init", *store_options, "--json")
    assert created["capf_certificate"]["common_name"].startswith("CAPF-")
    shown = run_cli("ca", "show", *store_options, "--json", check=True)
    assert json.loads(shown.stdout)["fingerprint"] == created["capf_certificate"]["fingerprint"]
