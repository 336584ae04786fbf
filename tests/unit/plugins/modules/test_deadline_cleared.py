"""A phone's deadline can be cleared: ``operation_completes_by: none`` (the word of
``certificate_operation: none``) removes it on every path that changes a phone's settings (capf_phone,
capf_bulk_update's ``set`` now or scheduled, a CSV cell, the declarative file's phones and bulk jobs),
with the same stored row and the same audit event. A lapsed operation whose deadline is cleared is
pending again, as with a new deadline. Clearing the deadline of a phone that has none changes nothing;
check mode and diff mode show the old deadline before and null after and write no byte. A device
template cannot say ``none`` (it holds what devices get); an empty or unknown value is refused with
the option's path and the rule."""

from __future__ import annotations

import json
import os

import pytest
import yaml

from ansible_collections.opencapf.capf.plugins.modules import capf_bulk_update, capf_device_template, capf_phone

from _opencapf import phone_config, scheduler
from _opencapf import vocabulary as v
from _opencapf.cli.main import main as cli_main
from _opencapf.store import open_store
from support.stores import dump, query
from support.tools import snapshot

NAME = "SEP001122334455"
PASSED = "2020-01-01T00:00:00Z"  # the deadline the operation lapsed by
LATER = "2099-01-01T00:00:00Z"   # when a scheduled job runs


def _seed(store_path, deadline=PASSED, lapse=True):
    """A phone with an install operation and ``deadline``; with ``lapse``, the scheduler has lapsed it."""
    with open_store(store_path, actor="test") as store:
        phone_config.converge(store, NAME, settings={"certificate_operation": "install_upgrade",
                                                     "operation_completes_by": deadline})
        if lapse:
            assert scheduler.run_due(store)["lapsed"] == [NAME]


def _row(store_path):
    [row] = query(store_path, "SELECT operation, operation_deadline, operation_status, operation_reason "
                              "FROM phones WHERE name = ?", (NAME,))
    return dict(row)


def _phone_events(store_path):
    return [(event["action"], json.loads(event["details"])) for event in query(
        store_path, "SELECT action, details FROM audit_events WHERE action LIKE 'phone.%' ORDER BY id")]


def _state(store_path):
    """The store's content but a scheduled job's own record (the job and its ``job.*`` events)."""
    with open_store(store_path, actor="test") as store:
        content = dump(store)
    content.pop("jobs")
    content["audit_events"] = [row for row in content["audit_events"] if "('action', 'job." not in row]
    return content


def _module(module, args):
    def through(run, store_path, _tmp_path, _capsys):
        result = run(module, dict(args, store=store_path))
        assert not result["failed"], result["msg"]
        return result["changed"]
    return through


def _scheduled(run, store_path, _tmp_path, _capsys):
    result = run(capf_bulk_update, {"store": store_path, "query": {"names": [NAME]},
                                    "set": {"operation_completes_by": v.NO_DEADLINE}, "run_at": LATER})
    assert not result["failed"] and result["changed"], result
    with open_store(store_path, actor="test") as store:
        [job] = scheduler.run_due(store, LATER)["jobs"]
    assert job["status"] == "succeeded", job
    return bool(job["result"]["counts"]["changed"])


def _csv(run, store_path, tmp_path, _capsys):
    path = tmp_path / "phones.csv"
    # An empty cell leaves its setting as it is; none clears the deadline.
    path.write_text(f"device_name,description,operation_completes_by\n{NAME},,{v.NO_DEADLINE}\n")
    result = run(capf_bulk_update, {"store": store_path, "csv_file": str(path)})
    assert not result["failed"], result["msg"]
    return result["changed"]


def _apply(section):
    def through(_run, store_path, tmp_path, capsys):
        item = ({"name": NAME, "operation_completes_by": v.NO_DEADLINE} if section == "phones" else
                {"query": {"names": [NAME]}, "set": {"operation_completes_by": v.NO_DEADLINE}})
        path = tmp_path / "deploy.yml"
        path.write_text(f"opencapf: 1\n{section}:\n  - {json.dumps(item)}\n")
        capsys.readouterr()
        assert cli_main(["--store", store_path, "apply", str(path)]) == 0, capsys.readouterr().err
        return "no changes" not in capsys.readouterr().out.lower()
    return through


PATHS = {
    "capf_phone": (_module(capf_phone, {"name": NAME, "operation_completes_by": v.NO_DEADLINE}), "capf_phone"),
    "bulk": (_module(capf_bulk_update, {"query": {"names": [NAME]}, "set": {"operation_completes_by": v.NO_DEADLINE}}),
             "bulk"),
    "bulk_scheduled": (_scheduled, "bulk"),
    "csv": (_csv, "csv"),
    "apply_phones": (_apply("phones"), "apply"),
    "apply_bulk": (_apply("bulk"), "bulk"),
}


@pytest.mark.parametrize("path", sorted(PATHS))
def test_none_clears_the_deadline_and_arms_the_lapsed_operation_again(path, run, store_path, tmp_path, capsys):
    _seed(store_path)
    assert _row(store_path) == {"operation": "install_upgrade", "operation_deadline": PASSED,
                                "operation_status": "lapsed", "operation_reason": _row(store_path)["operation_reason"]}
    seen = len(_phone_events(store_path))
    through, via = PATHS[path]
    assert through(run, store_path, tmp_path, capsys) is True
    assert _row(store_path) == {"operation": "install_upgrade", "operation_deadline": None,
                                "operation_status": "pending", "operation_reason": ""}
    # The one audit event, in the shape of every setting change: the option by name, the status it resets.
    assert _phone_events(store_path)[seen:] == [("phone.update", {
        "operation_completes_by": None, "operation_status": "pending", "operation_reason": "", "via": via})]
    before = _state(store_path)
    assert through(run, store_path, tmp_path, capsys) is False, f"{path}: clearing again is a change"
    assert _state(store_path) == before, f"{path}: clearing again wrote to the store"


@pytest.mark.parametrize("path", sorted(PATHS))
def test_clearing_no_deadline_changes_nothing(path, run, store_path, tmp_path, capsys):
    with open_store(store_path, actor="test") as store:
        phone_config.converge(store, NAME, settings={"certificate_operation": "install_upgrade"})
    before = _state(store_path)
    through, _via = PATHS[path]
    assert through(run, store_path, tmp_path, capsys) is False
    assert _state(store_path) == before


def test_a_pending_operation_stays_pending_without_its_deadline(run, store_path):
    _seed(store_path, deadline=LATER, lapse=False)
    result = run(capf_phone, {"store": store_path, "name": NAME, "operation_completes_by": v.NO_DEADLINE})
    assert result["changed"] and result["status"]["operation_completes_by"] is None, result
    assert result["status"]["operation_status"] == "pending"
    assert _phone_events(store_path)[-1] == ("phone.update", {"operation_completes_by": None, "via": "capf_phone"})


@pytest.mark.parametrize("module, args", [
    (capf_phone, {"name": NAME, "operation_completes_by": v.NO_DEADLINE}),
    (capf_bulk_update, {"query": {"names": [NAME]}, "set": {"operation_completes_by": v.NO_DEADLINE}}),
], ids=["capf_phone", "capf_bulk_update"])
def test_check_mode_and_diff_show_the_deadline_cleared_and_write_no_byte(module, args, run, store_path):
    _seed(store_path)
    written = snapshot(os.path.dirname(store_path))
    checked = run(module, dict(args, store=store_path), check=True, diff=True)
    assert not checked["failed"] and checked["changed"], checked
    assert snapshot(os.path.dirname(store_path)) == written, "check mode wrote to the store"
    before, after = checked["diff"]["before"], checked["diff"]["after"]
    if module is capf_bulk_update:
        before, after = before["phones"][NAME], after["phones"][NAME]
    assert (before["operation_completes_by"], after["operation_completes_by"]) == (PASSED, None), checked["diff"]
    assert (before["operation_status"], after["operation_status"]) == ("lapsed", "pending"), checked["diff"]
    real = run(module, dict(args, store=store_path), diff=True)
    assert real["diff"] == checked["diff"], "check mode predicted another change than the run made"


def test_the_plan_of_a_declarative_file_shows_the_deadline_cleared(store_path, tmp_path, capsys):
    _seed(store_path)
    path = tmp_path / "deploy.yml"
    path.write_text(f"opencapf: 1\nphones:\n  - name: {NAME}\n    operation_completes_by: none\n")
    with open_store(store_path, actor="test") as store:
        written = dump(store)
    capsys.readouterr()
    assert cli_main(["--store", store_path, "plan", str(path)]) == 0
    shown = capsys.readouterr().out
    assert f"operation_completes_by: '{PASSED}' -> None" in shown, shown
    with open_store(store_path, actor="test") as store:
        assert dump(store) == written


def _template_module(run, store_path, _tmp_path, _capsys):
    result = run(capf_device_template, {"store": store_path, "name": "Desk", "operation_completes_by": v.NO_DEADLINE})
    assert result["failed"], result
    return result["msg"]


def _template_apply(_run, store_path, tmp_path, capsys):
    path = tmp_path / "deploy.yml"
    path.write_text(f"opencapf: 1\ntemplates:\n  - name: Desk\n    operation_completes_by: none\n    devices: [{NAME}]\n")
    capsys.readouterr()
    assert cli_main(["--store", store_path, "apply", str(path)]) != 0
    return capsys.readouterr().err


@pytest.mark.parametrize("attempt, expected", [
    (_template_module, "operation_completes_by " + v.TEMPLATE_DEADLINE_RULE),
    (_template_apply, "templates[0].operation_completes_by: " + v.TEMPLATE_DEADLINE_RULE),
], ids=["capf_device_template", "apply_templates"])
def test_a_template_cannot_say_none(attempt, expected, run, store_path, tmp_path, capsys):
    """A template holds the settings devices get; one that leaves the deadline out gives none."""
    _seed(store_path)
    with open_store(store_path, actor="test") as store:
        before = dump(store)
    message = attempt(run, store_path, tmp_path, capsys)
    assert expected in message and "Traceback" not in message, message
    with open_store(store_path, actor="test") as store:
        assert dump(store) == before


@pytest.mark.parametrize("value", ["", "None", "NONE", "never"])
@pytest.mark.parametrize("module, args, field", [
    (capf_phone, {"name": NAME}, "operation_completes_by"),
    (capf_bulk_update, {"query": {"names": [NAME]}}, "set.operation_completes_by"),
], ids=["capf_phone", "capf_bulk_update"])
def test_another_value_is_refused_naming_the_option_and_the_rule(module, args, field, value, run, store_path):
    _seed(store_path)
    with open_store(store_path, actor="test") as store:
        before = dump(store)
    settings = {"operation_completes_by": value}
    result = run(module, dict(args, store=store_path, **(settings if module is capf_phone else {"set": settings})))
    assert result["failed"] and result["msg"].startswith(f"{field} {v.DEADLINE_RULE}"), result["msg"]
    with open_store(store_path, actor="test") as store:
        assert dump(store) == before


@pytest.mark.parametrize("module", [capf_phone, capf_bulk_update], ids=["capf_phone", "capf_bulk_update"])
def test_the_documented_example_clears_the_deadline(module, run, store_path):
    """The example of each module that says ``none`` runs as written against a phone it names or matches."""
    with open_store(store_path, actor="test") as store:
        phone_config.converge(store, NAME, settings={"certificate_operation": "install_upgrade", "device_pool": "HQ",
                                                     "operation_completes_by": PASSED})
    key = f"opencapf.capf.{module.__name__.rsplit('.', 1)[1]}"
    [task] = [task[key] for task in yaml.safe_load(module.EXAMPLES)
              if key in task and v.NO_DEADLINE == (task[key].get("set") or task[key]).get("operation_completes_by")]
    result = run(module, dict(task, store=store_path))
    assert not result["failed"] and result["changed"], result
    assert _row(store_path) == {"operation": "install_upgrade", "operation_deadline": None,
                                "operation_status": "pending", "operation_reason": ""}
