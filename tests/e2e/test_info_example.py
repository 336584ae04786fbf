"""The capf_info example "Fail when a phone has no installed LSC", run as ansible-doc shows it in a
real playbook: it fails once a phone has no installed LSC (naming it), and its query selects no
phone while every phone has one."""

from __future__ import annotations

import os

import yaml

from support.ansible_runner import install_collection, playbook, task_results
from support.phones import phone, run_enrol
from support.protocol import RunningServer, add_phone
from support.tools import ROOT
from _opencapf import reports
from _opencapf.ca import authority
from _opencapf.store import open_store

FAILING_TASK = "Fail when a phone has no installed LSC"
QUERY_TASK = "Phones whose current LSC is not installed (or installed but past its notAfter), or that have none"
INSTALLED, NEW_PHONE = "SEP0000000000E1", "SEP0000000000E2"


def _example_tasks() -> list[dict]:
    with open(os.path.join(ROOT, "plugins", "modules", "capf_info.py"), encoding="utf-8") as handle:
        source = handle.read()
    examples = source.split('EXAMPLES = r"""', 1)[1].split('"""', 1)[0]
    tasks = {task["name"]: task for task in yaml.safe_load(examples)}
    return [tasks[QUERY_TASK], tasks[FAILING_TASK]]


def test_the_example_fails_exactly_when_a_phone_has_no_installed_lsc(store_path, tmp_path):
    example = _example_tasks()
    query = example[0]["opencapf.capf.capf_info"]["query"]
    store = open_store(store_path, actor="test")
    try:
        authority.ensure(store)
        add_phone(store, INSTALLED, operation="install_upgrade", auth_mode="null_string", key_order="ec")
        server = RunningServer(store_path, step_timeout=5.0)
        try:
            assert run_enrol(phone(tmp_path, INSTALLED), server).outcome == "ok"
        finally:
            server.stop()
        # While every phone has an installed LSC, the example's query selects none: its assert holds.
        assert reports.gather(store, ["phones"], query=query)["phones"] == []
        add_phone(store, NEW_PHONE, operation="install_upgrade", auth_mode="null_string")
    finally:
        store.close()
    book = [{
        "name": "The capf_info example",
        "hosts": "localhost",
        "gather_facts": False,
        "module_defaults": {"group/opencapf.capf.capf": {"store": store_path}},
        "tasks": [
            {"name": "One phone has no LSC", "block": example, "rescue": [
                {"name": "Record which task failed", "ansible.builtin.set_fact": {
                    "failed_task": "{{ ansible_failed_task.name }}", "failed_msg": "{{ ansible_failed_result.msg }}"}},
            ]},
            {"name": "The example failed", "ansible.builtin.assert": {
                "that": [f"failed_task == {FAILING_TASK!r}", f"{NEW_PHONE!r} in failed_msg",
                         f"{INSTALLED!r} not in failed_msg"]}},
        ],
    }]
    path = tmp_path / "example.yml"
    path.write_text(yaml.safe_dump(book, sort_keys=False))
    run = playbook(install_collection(str(tmp_path / "collections")), str(path))
    results = task_results(run, FAILING_TASK)
    assert len(results) == 1 and results[0].get("failed")
