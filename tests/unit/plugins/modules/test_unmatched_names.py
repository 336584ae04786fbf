"""Explicit device-name lists: names that are not in the store are returned and warned about, or fail the task.

Invariant, for every module option that takes a list of device names: the names no phone in the
store has come back in ``unmatched`` (canonical, sorted) with a task warning naming the option and
them; with ``fail_on_unmatched`` the task fails naming them and nothing changes (no row, no file),
in check mode and in a real run alike; names that all exist give no warning.
"""

from __future__ import annotations

import os

import pytest

from support.stores import query
from ansible_collections.opencapf.capf.plugins.modules import (
    capf_bulk_update, capf_offline_ca, capf_phone, capf_stale_lsc)

KNOWN, TYPO = "SEP001122334455", "SEP00112233445F"
FUTURE = "2999-01-01T00:00:00Z"


def _state(location, directory):
    rows = [query(location, f"SELECT * FROM {table} ORDER BY id") for table in ("phones", "jobs", "certificates")]
    return rows, sorted(os.listdir(directory))


# (module, option path in messages, arguments given the names and an output directory)
CASES = [
    (capf_bulk_update, "query.names", lambda names, _d: {"query": {"names": names}, "set": {"description": "lobby"}}),
    (capf_bulk_update, "query.names", lambda names, d: {"query": {"names": names}, "set": {"description": "lobby"},
                                                        "run_at": FUTURE}),
    (capf_stale_lsc, "devices", lambda names, _d: {"devices": names}),
    (capf_offline_ca, "devices", lambda names, d: {"state": "exported", "path": d, "devices": names}),
]
IDS = ["bulk-now", "bulk-scheduled", "stale_lsc", "offline_ca-export"]


@pytest.fixture
def known_phone(run, location):
    assert run(capf_phone, {"store": location, "name": KNOWN})["changed"]


@pytest.mark.parametrize("module,option,arguments", CASES, ids=IDS)
@pytest.mark.parametrize("check", [False, True])
def test_unknown_names_are_returned_and_warned(run, location, tmp_path, known_phone, module, option, arguments,
                                               check):
    result = run(module, dict(arguments([KNOWN, TYPO.lower()], str(tmp_path)), store=location), check=check)
    assert not result["failed"], result
    assert result["unmatched"] == [TYPO]
    assert result["warnings"] == [f"{option}: 1 device name(s) not in the store were ignored: {TYPO}"]
    clean = run(module, dict(arguments([KNOWN], str(tmp_path)), store=location), check=check)
    assert clean["unmatched"] == [] and not clean.get("warnings")


@pytest.mark.parametrize("module,option,arguments", CASES, ids=IDS)
@pytest.mark.parametrize("check", [False, True])
def test_fail_on_unmatched_fails_naming_them_and_changes_nothing(run, location, tmp_path, known_phone, module,
                                                                 option, arguments, check):
    before = _state(location, tmp_path)
    result = run(module, dict(arguments([KNOWN, TYPO, "SEP0000000000AA"], str(tmp_path)), store=location,
                              fail_on_unmatched=True), check=check)
    assert result["failed"] and not result.get("changed")
    assert result["msg"] == (f"{option} names 2 device(s) that are not in the store: SEP0000000000AA, {TYPO}; nothing "
                             "was changed (fail_on_unmatched)")
    assert _state(location, tmp_path) == before
    passed = run(module, dict(arguments([KNOWN], str(tmp_path)), store=location, fail_on_unmatched=True), check=check)
    assert not passed["failed"] and passed["unmatched"] == []


def test_bulk_rerun_stays_idempotent_with_unmatched_names(run, location, known_phone):
    args = {"store": location, "query": {"names": [KNOWN, TYPO]}, "set": {"description": "lobby"}}
    assert run(capf_bulk_update, args)["changed"] is True
    again = run(capf_bulk_update, args)
    assert again["changed"] is False and again["unmatched"] == [TYPO]
