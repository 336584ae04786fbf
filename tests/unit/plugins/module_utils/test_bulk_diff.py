"""The shape of a bulk job's diff (``bulk.diff_view``) for every format and size around the threshold."""

from __future__ import annotations

import collections

import pytest

from _opencapf import bulk
from _opencapf.errors import ValidationError
from _opencapf.vocabulary import DIFF_SUMMARY_PHONES, DIFF_SUMMARY_THRESHOLD


def _job(changed: int, inserted: int):
    before, after = {}, {}
    for index in range(changed):
        name = f"SEP{index:012X}"
        before[name] = {"certificate_operation": "none"}
        after[name] = {"certificate_operation": "install_upgrade"}
        if index % 2 == 0:
            before[name]["key_order"], after[name]["key_order"] = "rsa", "ec"
    for index in range(changed, changed + inserted):
        name = f"SEP{index:012X}"
        before[name], after[name] = None, {"name": name, "device_pool": "New"}
    return {"phones": before}, {"phones": after}


@pytest.mark.parametrize("changed,inserted", [(0, 0), (1, 0), (DIFF_SUMMARY_THRESHOLD, 0),
                                              (DIFF_SUMMARY_THRESHOLD - 10, 11), (250, 40)])
def test_diff_formats(changed, inserted):
    before, after = _job(changed, inserted)
    total = changed + inserted
    full = bulk.diff_view(before, after, "full")
    assert full == (before, after)
    assert bulk.diff_view(before, after, "auto") == (full if total <= DIFF_SUMMARY_THRESHOLD
                                                     else bulk.diff_view(before, after, "summary"))
    small_before, small_after = bulk.diff_view(before, after, "summary")
    shown = sorted(after["phones"])[:DIFF_SUMMARY_PHONES]
    assert list(small_before["phones"]) == shown == list(small_after["phones"])
    assert all(small_after["phones"][name] == after["phones"][name] for name in shown)
    summary = small_after["summary"]
    assert (summary["phones_changed"], summary["phones_inserted"], summary["phones_shown"]) == (changed, inserted,
                                                                                                len(shown))
    expected = collections.Counter(key for name, fields in after["phones"].items()
                                   if before["phones"][name] is not None for key in fields)
    assert summary["changed_settings"] == dict(expected)


def test_unknown_diff_format_fails_before_the_job_runs(store):
    with pytest.raises(ValidationError, match="diff_format"):
        bulk.converge(store, query={"name_pattern": "SEP*"}, settings={"device_pool": "X"}, diff_format="brief")
